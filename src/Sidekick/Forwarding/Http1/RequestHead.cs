using System.Buffers;
using System.Text;
using Microsoft.Extensions.Primitives;

namespace Sidekick.Forwarding.Http1;

/// <summary>
/// The bytes of one request to a backend (request line, headers and a small body) in a pooled buffer.
/// Shapes the request by <see cref="ForwardingHeaders"/>, the policy YARP's <see cref="SidekickTransformer"/>
/// follows too: the client's raw target and Host byte for byte, X-Forwarded-For / X-Real-IP /
/// X-Forwarded-Host set once, hop-by-hop headers and those named in Connection dropped. Header values are written as UTF-8, the encoding Kestrel
/// accepted them in, so signed non-ASCII metadata reaches the backend unchanged.
/// </summary>
internal struct RequestHead : IDisposable
{
    private byte[] _buffer;
    private int _length;

    private RequestHead(byte[] buffer)
    {
        _buffer = buffer;
        _length = 0;
    }

    public readonly ReadOnlyMemory<byte> Bytes => _buffer.AsMemory(0, _length);

    /// <summary>The client's header bytes as <see cref="ExchangeMeter.RequestHeaderBytes"/> counts them (counted while copying).</summary>
    public long HeaderBytes { get; private set; }

    /// <summary>The fields a trace names the client by (found while copying).</summary>
    public Observability.ClientAddressFields ClientFields { get; private set; }

    /// <summary>
    /// Writes the head for a body of <paramref name="bodyLength"/> bytes, which the caller appends with
    /// <see cref="ReserveBody"/>. The framing is ours, never the client's field copied: Content-Length states
    /// the bytes sidekick reads and sends (so no Connection token or odd header can make the backend read the
    /// body as another request), and Transfer-Encoding never reaches this path.
    /// </summary>
    public static RequestHead Write(HttpContext context, string rawTarget, string backendAuthority, int bodyLength)
    {
        var request = context.Request;
        var head = new RequestHead(ExchangeBuffers.Rent());
        head.Append(request.Method);
        head.Append(" "u8);
        head.Append(rawTarget);
        head.Append(" HTTP/1.1\r\nHost: "u8);
        var host = request.Headers.Host.ToString();
        // A client without Host (HTTP/1.0) gets the backend's authority, as HttpClient would send.
        head.Append(host.Length > 0 ? host : backendAuthority);
        head.Append("\r\n"u8);

        var headers = request.Headers;
        var connectionNamed = headers.Connection.Count == 0 ? null : HopByHopHeaders.NamedIn(headers.Connection);
        // X-Forwarded-For is continued below and, with X-Real-IP and Forwarded, names the client in the trace: found
        // here rather than looked up again.
        var clientFields = default(Observability.ClientAddressFields);
        long headerBytes = 0;
        bool? trusted = null; // asked only of a request that carries a forwarding field
        foreach (var (name, values) in headers)
        {
            var copied = ForwardingHeaders.IsCopied(name, host.Length > 0, connectionNamed) &&
                         !(TrustedProxies.IsClaim(name) && !(trusted ??= TrustedProxies.Current.Trusts(context.Connection.RemoteIpAddress))) &&
                         RequestGuard.IsToken(name);
            Observability.ClientAddressFields.Note(ref clientFields, name, values);

            foreach (var value in values)
            {
                headerBytes += name.Length + (value?.Length ?? 0);
                if (copied)
                {
                    head.AppendHeader(name, value);
                }
            }
        }

        head.HeaderBytes = headerBytes;
        head.ClientFields = clientFields;
        var prior = clientFields.ForwardedFor;
        if (bodyLength > 0 || request.ContentLength is not null)
        {
            // An empty POST keeps its "Content-Length: 0": servers answer 411 to a body-less POST without one.
            head.Append("Content-Length: "u8);
            head.AppendNumber(bodyLength);
            head.Append("\r\n"u8);
        }

        var ip = ClientAddress.For(context.Connection.RemoteIpAddress);
        head.Append("X-Forwarded-For: "u8);
        if (prior.Count > 0 && (trusted ??= TrustedProxies.Current.Trusts(context.Connection.RemoteIpAddress)))
        {
            head.AppendJoined(prior);
            head.Append(", "u8);
        }

        head.Append(ip);
        head.Append("\r\nX-Real-IP: "u8);
        head.Append(ip);
        head.Append("\r\n"u8);
        if (host.Length > 0)
        {
            head.AppendHeader("X-Forwarded-Host", host);
        }

        head.Append("\r\n"u8);
        return head;
    }

    /// <summary>Room for <paramref name="length"/> body bytes after the head, to be filled by the caller.</summary>
    public Memory<byte> ReserveBody(int length)
    {
        Ensure(length);
        var room = _buffer.AsMemory(_length, length);
        _length += length;
        return room;
    }

    public void Dispose()
    {
        if (_buffer is { } buffer)
        {
            _buffer = null!;
            ExchangeBuffers.Return(buffer);
        }
    }

    private void AppendHeader(string name, string? value)
    {
        Append(name);
        Append(": "u8);
        Append(value ?? "");
        Append("\r\n"u8);
    }

    private void AppendNumber(int value)
    {
        Ensure(11);
        value.TryFormat(_buffer.AsSpan(_length), out var written, provider: System.Globalization.CultureInfo.InvariantCulture);
        _length += written;
    }

    private void AppendJoined(StringValues values)
    {
        for (var i = 0; i < values.Count; i++)
        {
            if (i > 0)
            {
                Append(","u8);
            }

            Append(values[i] ?? "");
        }
    }

    private void Append(ReadOnlySpan<byte> bytes)
    {
        Ensure(bytes.Length);
        bytes.CopyTo(_buffer.AsSpan(_length));
        _length += bytes.Length;
    }

    private void Append(string text)
    {
        // Worst case three bytes per UTF-16 unit; almost every value is ASCII and far from the end. ASCII narrows
        // to the same bytes UTF-8 would write, at ~40 % of the UTF-8 encoder's cost (callgrind, 1 KiB requests).
        Ensure(text.Length * 3);
        var free = _buffer.AsSpan(_length);
        _length += System.Text.Ascii.FromUtf16(text, free, out var narrowed) == System.Buffers.OperationStatus.Done
            ? narrowed
            : Encoding.UTF8.GetBytes(text, free);
    }

    private void Ensure(int more)
    {
        if (_buffer.Length - _length >= more)
        {
            return;
        }

        var larger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, _length + more));
        _buffer.AsSpan(0, _length).CopyTo(larger);
        ExchangeBuffers.Return(_buffer);
        _buffer = larger;
    }
}
