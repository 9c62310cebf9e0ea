using System.Buffers.Text;
using System.Text;
using Microsoft.Extensions.Primitives;

namespace Sidekick.Forwarding.Http1;

/// <summary>How the body after a response head is delimited (RFC 9112 §6.3).</summary>
internal enum BodyFraming
{
    None,
    ContentLength,
    Chunked,
    UntilClose,
}

/// <summary>
/// A backend's response head (RFC 9112 §4–5), parsed in place from the receive buffer and copied onto the
/// client's response: status, end-to-end headers (hop-by-hop ones and those named in Connection dropped,
/// values the proxy set before kept and appended to, as YARP does), and the body framing.
/// </summary>
internal readonly struct ResponseHead
{
    private ResponseHead(BodyFraming framing, long contentLength, bool reusable)
    {
        Framing = framing;
        ContentLength = contentLength;
        Reusable = reusable;
    }

    public BodyFraming Framing { get; }

    public long ContentLength { get; }

    /// <summary>The backend lets the connection carry another request after this response.</summary>
    public bool Reusable { get; }

    /// <summary>Length of the head including its blank line, or -1 if it is not complete yet.</summary>
    public static int FindEnd(ReadOnlySpan<byte> data)
    {
        var crlf = data.IndexOf("\r\n\r\n"u8);
        // Bare LF line ends are tolerated (RFC 9112 §2.2), as HttpClient does.
        var lf = data.IndexOf("\n\n"u8);
        return crlf >= 0 && (lf < 0 || crlf + 2 < lf) ? crlf + 4 : lf >= 0 ? lf + 2 : -1;
    }

    /// <summary>Reads only the status code of a complete head (to skip 1xx interim responses).</summary>
    public static int PeekStatus(ReadOnlySpan<byte> head) =>
        head.Length >= 12 && head.StartsWith("HTTP/1."u8) && head[8] == ' ' &&
        Utf8Parser.TryParse(head.Slice(9, 3), out int status, out var used) && used == 3 ? status : -1;

    /// <summary>
    /// Parses a complete head and applies it to <paramref name="response"/>. Throws
    /// <see cref="HttpRequestException"/> (InvalidResponse) for a head that cannot be trusted.
    /// </summary>
    public static ResponseHead Apply(ReadOnlySpan<byte> head, HttpResponse response, bool isHeadRequest, ResponseHeaderValues values)
    {
        var status = PeekStatus(head);
        if (status < 200 || status > 999 || (head.Length > 12 && head[12] is not ((byte)' ' or (byte)'\r' or (byte)'\n')))
        {
            throw Invalid("malformed status line");
        }

        var keepAliveByDefault = head[7] == (byte)'1';
        var firstLineEnd = head.IndexOf((byte)'\n') + 1;
        var fields = head[firstLineEnd..];

        // First pass: framing and connection options, which decide what the second pass copies.
        long contentLength = -1;
        var chunked = false;
        var close = !keepAliveByDefault;
        List<string>? connectionNamed = null;
        foreach (var (name, value) in new FieldEnumerator(fields))
        {
            if (Ascii.EqualsIgnoreCase(name, "Content-Length"u8))
            {
                if (!Utf8Parser.TryParse(value, out long length, out var used) || used != value.Length || length < 0 ||
                    (contentLength >= 0 && contentLength != length))
                {
                    throw Invalid("invalid Content-Length");
                }

                contentLength = length;
            }
            else if (Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8))
            {
                if (!Ascii.EqualsIgnoreCase(value, "chunked"u8))
                {
                    throw Invalid("unsupported Transfer-Encoding");
                }

                chunked = true;
            }
            else if (Ascii.EqualsIgnoreCase(name, "Connection"u8))
            {
                var text = ResponseHeaderValues.Decode(value);
                foreach (var range in text.AsSpan().Split(','))
                {
                    var token = text.AsSpan(range).Trim(" \t");
                    if (token.Equals("close", StringComparison.OrdinalIgnoreCase))
                    {
                        close = true;
                    }
                    else if (token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase))
                    {
                        close = false;
                    }
                }

                HopByHopHeaders.AddNamed(text, ref connectionNamed);
            }
        }

        response.StatusCode = status;
        var headers = response.Headers;
        foreach (var (nameBytes, valueBytes) in new FieldEnumerator(fields))
        {
            var known = ResponseHeaderValues.IndexOf(nameBytes);
            var name = known >= 0 ? ResponseHeaderValues.NameAt(known) : NewName(nameBytes);
            if (HopByHopHeaders.Contains(name) || HopByHopHeaders.IsNamed(connectionNamed, name) ||
                name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            var value = known >= 0 ? values.Value(known, valueBytes) : ResponseHeaderValues.Decode(valueBytes);
            headers[name] = headers.TryGetValue(name, out var existing) ? StringValues.Concat(existing, value) : new StringValues(value);
        }

        var noBody = isHeadRequest || status is 204 or 304;
        if (contentLength >= 0 && !chunked && status != 204)
        {
            response.ContentLength = contentLength;
        }

        var framing = noBody ? BodyFraming.None
            : chunked ? BodyFraming.Chunked
            : contentLength == 0 ? BodyFraming.None
            : contentLength > 0 ? BodyFraming.ContentLength
            : BodyFraming.UntilClose;
        return new ResponseHead(framing, contentLength, !close && framing != BodyFraming.UntilClose);
    }

    private static string NewName(ReadOnlySpan<byte> name)
    {
        foreach (var b in name)
        {
            // RFC 9110 §5.6.2 token characters.
            if (b <= 32 || b >= 127 || "\"(),/:;<=>?@[\\]{}"u8.Contains(b))
            {
                throw Invalid("invalid header name");
            }
        }

        return System.Text.Encoding.ASCII.GetString(name);
    }

    private static HttpRequestException Invalid(string what) =>
        new(HttpRequestError.InvalidResponse, $"the backend sent an invalid response head ({what})");

    /// <summary>Walks "name: value" lines of a head (after the status line), values trimmed of OWS.</summary>
    private ref struct FieldEnumerator(ReadOnlySpan<byte> fields)
    {
        private ReadOnlySpan<byte> _rest = fields;

        public Field Current { get; private set; }

        public readonly FieldEnumerator GetEnumerator() => this;

        public bool MoveNext()
        {
            var lineEnd = _rest.IndexOf((byte)'\n');
            if (lineEnd < 0)
            {
                return false;
            }

            var line = _rest[..lineEnd];
            _rest = _rest[(lineEnd + 1)..];
            if (!line.IsEmpty && line[^1] == (byte)'\r')
            {
                line = line[..^1];
            }

            if (line.IsEmpty)
            {
                return false;
            }

            if (line[0] is (byte)' ' or (byte)'\t')
            {
                throw Invalid("obsolete line folding");
            }

            var colon = line.IndexOf((byte)':');
            if (colon <= 0)
            {
                throw Invalid("header line without a name");
            }

            var value = line[(colon + 1)..].Trim(" \t"u8);
            if (value.Contains((byte)0) || value.Contains((byte)'\r'))
            {
                throw Invalid("control character in a header value");
            }

            Current = new Field(line[..colon], value);
            return true;
        }
    }

    private readonly ref struct Field(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        private readonly ReadOnlySpan<byte> _name = name;
        private readonly ReadOnlySpan<byte> _value = value;

        public void Deconstruct(out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value)
        {
            name = _name;
            value = _value;
        }
    }
}
