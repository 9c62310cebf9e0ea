using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Sidekick.Tests.Integration;

/// <summary>One request as a <see cref="RawBackend"/> read it off the wire.</summary>
internal sealed record RawRequest(string Method, string Target, string Head, byte[] Body, int ConnectionNumber);

/// <summary>
/// What a <see cref="RawBackend"/> writes back, and whether it then closes the connection; with
/// <paramref name="BeforeEachByte"/>, one byte per write, each once that task (given the byte's index) completes.
/// </summary>
internal sealed record RawResponse(byte[] Bytes, bool Close = false, Func<int, Task>? BeforeEachByte = null)
{
    public static RawResponse Text(string wire, bool close = false) => new(Encoding.Latin1.GetBytes(wire), close);
}

/// <summary>
/// A backend written on a bare socket, for the wire-level behaviour no real server shows on demand:
/// connections closed without notice, malformed heads, odd but legal framing. Health probes get a 200.
/// </summary>
internal sealed class RawBackend : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly Func<RawRequest, RawResponse> _respond;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private int _connections;

    public RawBackend(Func<RawRequest, RawResponse> respond)
    {
        _respond = respond;
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public Uri Url => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");

    /// <summary>Requests other than health probes, in arrival order.</summary>
    public ConcurrentQueue<RawRequest> Requests { get; } = new();

    public int Connections => Volatile.Read(ref _connections);

    /// <summary>Every byte received on every connection (probes included), in arrival order per connection.</summary>
    public ConcurrentDictionary<int, MemoryStream> Received { get; } = new();

    /// <summary>The heads of the health probes received.</summary>
    public ConcurrentQueue<string> ProbeHeads { get; } = new();

    /// <summary>All bytes received on all connections, as Latin-1 text.</summary>
    public string ReceivedText()
    {
        var text = new StringBuilder();
        foreach (var (_, bytes) in Received.OrderBy(c => c.Key))
        {
            lock (bytes)
            {
                text.Append(Encoding.Latin1.GetString(bytes.GetBuffer(), 0, (int)bytes.Length));
            }
        }

        return text.ToString();
    }

    /// <summary>New connections are refused from now on (a backend process gone); those open stay as they are.</summary>
    public void StopAccepting() => _listener.Stop();

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try
        {
            await _accepting;
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            var socket = await _listener.AcceptSocketAsync(_stop.Token);
            _ = ServeAsync(socket, Interlocked.Increment(ref _connections));
        }
    }

    private async Task ServeAsync(Socket socket, int number)
    {
        using var _ = socket;
        var buffer = new byte[256 * 1024];
        var filled = 0;
        var log = Received.GetOrAdd(number, _ => new MemoryStream());
        try
        {
            while (true)
            {
                int headEnd;
                while ((headEnd = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8)) < 0)
                {
                    var read = await socket.ReceiveAsync(buffer.AsMemory(filled), _stop.Token);
                    if (read == 0)
                    {
                        return;
                    }

                    lock (log)
                    {
                        log.Write(buffer, filled, read);
                    }

                    filled += read;
                }

                var head = Encoding.Latin1.GetString(buffer, 0, headEnd + 4);
                var length = ContentLength(head);
                if (head.Contains("\r\nTransfer-Encoding: chunked\r\n", StringComparison.OrdinalIgnoreCase))
                {
                    // Kept as received (chunk framing included) up to the last chunk and an empty trailer.
                    int end;
                    while ((end = buffer.AsSpan(headEnd + 4, filled - headEnd - 4).IndexOf("0\r\n\r\n"u8)) < 0)
                    {
                        var read = await socket.ReceiveAsync(buffer.AsMemory(filled), _stop.Token);
                        if (read == 0)
                        {
                            return;
                        }

                        lock (log)
                        {
                            log.Write(buffer, filled, read);
                        }

                        filled += read;
                    }

                    length = end + 5;
                }

                while (filled < headEnd + 4 + length)
                {
                    var read = await socket.ReceiveAsync(buffer.AsMemory(filled), _stop.Token);
                    if (read == 0)
                    {
                        return;
                    }

                    lock (log)
                    {
                        log.Write(buffer, filled, read);
                    }

                    filled += read;
                }

                var parts = head.Split(' ', 3);
                var request = new RawRequest(parts[0], parts[1], head, buffer.AsSpan(headEnd + 4, length).ToArray(), number);
                var used = headEnd + 4 + length;
                buffer.AsSpan(used, filled - used).CopyTo(buffer);
                filled -= used;

                var probe = request.Target.StartsWith("/health", StringComparison.Ordinal);
                if (probe)
                {
                    ProbeHeads.Enqueue(head);
                }

                var response = probe ? RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") : Record(request);
                if (response.BeforeEachByte is { } before)
                {
                    for (var i = 0; i < response.Bytes.Length; i++)
                    {
                        await before(i);
                        await socket.SendAsync(response.Bytes.AsMemory(i, 1), SocketFlags.None, _stop.Token);
                    }
                }
                else
                {
                    await socket.SendAsync(response.Bytes, SocketFlags.None, _stop.Token);
                }

                if (response.Close)
                {
                    return;
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    private RawResponse Record(RawRequest request)
    {
        Requests.Enqueue(request);
        return _respond(request);
    }

    private static int ContentLength(string head)
    {
        foreach (var line in head.Split("\r\n"))
        {
            if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
            {
                return int.Parse(line.AsSpan(15).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }
}
