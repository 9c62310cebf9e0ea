using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;

namespace Sidekick.Tests.Integration;

/// <summary>
/// One HTTP/1.1 exchange a <see cref="LoggingRelay"/> passed on: the request head exactly as the server received
/// it, and the status line, head and body length of the server's answer.
/// </summary>
internal sealed class RelayedExchange
{
    public required int Sequence { get; init; }
    public required int Connection { get; init; }
    /// <summary>Request line and header fields, byte for byte (Latin-1), up to and including the empty line.</summary>
    public required string RequestHead { get; init; }
    public required string Method { get; init; }
    public required string Target { get; init; }
    public required IReadOnlyList<KeyValuePair<string, string>> RequestFields { get; init; }
    /// <summary>The final status (0 while unanswered or when the connection ended first).</summary>
    public int Status { get; set; }
    public string ResponseHead { get; set; } = "";
    /// <summary>Body bytes of the final response as framed on the wire (chunk framing excluded).</summary>
    public long ResponseBodyBytes { get; set; }

    /// <summary>The value of a request field (the values of repeated fields joined by ", "), null when absent.</summary>
    public string? Field(string name)
    {
        var values = RequestFields.Where(f => string.Equals(f.Key, name, StringComparison.OrdinalIgnoreCase)).Select(f => f.Value).ToList();
        return values.Count == 0 ? null : string.Join(", ", values);
    }

    public override string ToString()
    {
        var fields = string.Join(" ", new[] { "Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range" }
            .Select(n => (Name: n, Value: Field(n))).Where(f => f.Value is not null).Select(f => $"{f.Name}: {f.Value}"));
        var signed = Field("Authorization") is { } auth ? auth.Split(' ')[0] : "unsigned";
        return $"#{Sequence} c{Connection} {Method} {Target} [{signed}] {fields} -> {(Status == 0 ? "(no answer)" : Status.ToString(CultureInfo.InvariantCulture))} body {ResponseBodyBytes}";
    }
}

/// <summary>
/// A TCP relay in front of an HTTP/1.1 server that records every request head the server received, byte for
/// byte, with the status and body length of its answer: the server's own request log, with headers. Bytes are
/// passed on unchanged in both directions; the relay only follows the message framing (Content-Length,
/// chunked, HEAD/1xx/204/304 without content) to pair each answer with its request on a persistent connection.
/// </summary>
internal sealed class LoggingRelay : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly IPEndPoint _upstream;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentBag<Task> _connections = [];
    private readonly ConcurrentQueue<RelayedExchange> _exchanges = new();
    private readonly Task _accepting;
    private int _connectionCount;
    private int _sequence;

    public LoggingRelay(Uri upstream)
    {
        _upstream = new IPEndPoint(IPAddress.Parse(upstream.Host), upstream.Port);
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public Uri Url => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");

    /// <summary>Errors seen while relaying (a framing the relay could not follow), for the failure messages.</summary>
    public ConcurrentQueue<string> Errors { get; } = new();

    /// <summary>Every exchange so far, in the order the requests arrived.</summary>
    public IReadOnlyList<RelayedExchange> Exchanges => _exchanges.OrderBy(e => e.Sequence).ToList();

    /// <summary>The next request's sequence number: exchanges from here on are those made after this call.</summary>
    public int Mark() => Volatile.Read(ref _sequence);

    public IReadOnlyList<RelayedExchange> Since(int mark) => Exchanges.Where(e => e.Sequence >= mark).ToList();

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

        await Task.WhenAll(_connections.ToArray());
        _stop.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            var client = await _listener.AcceptSocketAsync(_stop.Token);
            var number = Interlocked.Increment(ref _connectionCount);
            _connections.Add(Task.Run(() => RelayAsync(client, number)));
        }
    }

    private async Task RelayAsync(Socket client, int number)
    {
        using var upstream = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.NoDelay = true;
        try
        {
            await upstream.ConnectAsync(_upstream, _stop.Token);
            var pending = Channel.CreateUnbounded<RelayedExchange>();
            var requests = RequestsAsync(new WireReader(client), upstream, number, pending.Writer);
            var responses = ResponsesAsync(new WireReader(upstream), client, pending.Reader);
            if ((await Task.WhenAny(requests, responses)).IsFaulted)
            {
                // A broken side ends the other one too.
                client.Dispose();
                upstream.Dispose();
            }

            await Task.WhenAll(requests, responses);
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or IOException or ObjectDisposedException)
        {
        }
        catch (Exception ex)
        {
            Errors.Enqueue($"connection {number}: {ex}");
        }
        finally
        {
            client.Dispose();
        }
    }

    private async Task RequestsAsync(WireReader from, Socket to, int connection, ChannelWriter<RelayedExchange> pending)
    {
        try
        {
            while (await from.ReadHeadAsync(_stop.Token) is { } head)
            {
                var text = Encoding.Latin1.GetString(head);
                var lines = text.Split("\r\n");
                var requestLine = lines[0].Split(' ');
                var fields = lines.Skip(1).Where(l => l.Length > 0).Select(l =>
                {
                    var colon = l.IndexOf(':', StringComparison.Ordinal);
                    return KeyValuePair.Create(l[..colon], l[(colon + 1)..].Trim(' ', '\t'));
                }).ToList();
                var exchange = new RelayedExchange
                {
                    Sequence = Interlocked.Increment(ref _sequence) - 1,
                    Connection = connection,
                    RequestHead = text,
                    Method = requestLine[0],
                    Target = requestLine.Length > 1 ? requestLine[1] : "",
                    RequestFields = fields,
                };
                _exchanges.Enqueue(exchange);
                await pending.WriteAsync(exchange, _stop.Token); // before the server can answer it
                await SendAsync(to, head);
                await CopyBodyAsync(from, to, Framing(exchange.Field, isResponse: false, noContent: false), counted: null, _stop.Token);
            }
        }
        finally
        {
            pending.TryComplete();
            ShutdownSend(to);
        }
    }

    private async Task ResponsesAsync(WireReader from, Socket to, ChannelReader<RelayedExchange> pending)
    {
        try
        {
            while (await from.ReadHeadAsync(_stop.Token) is { } head)
            {
                var text = Encoding.Latin1.GetString(head);
                var lines = text.Split("\r\n");
                var status = int.Parse(lines[0].Split(' ')[1], CultureInfo.InvariantCulture);
                var fields = lines.Skip(1).Where(l => l.Length > 0).Select(l =>
                {
                    var colon = l.IndexOf(':', StringComparison.Ordinal);
                    return KeyValuePair.Create(l[..colon], l[(colon + 1)..].Trim(' ', '\t'));
                }).ToList();
                string? Field(string name) => fields.Where(f => string.Equals(f.Key, name, StringComparison.OrdinalIgnoreCase)).Select(f => f.Value).FirstOrDefault();

                if (status is >= 100 and < 200 and not 101)
                {
                    await SendAsync(to, head);
                    continue; // interim: the final answer follows
                }

                // Recorded before it is passed on, and each run of body bytes before it is: a client that has the whole
                // answer through the server behind the relay finds it in the log, not a moment later.
                var exchange = await pending.ReadAsync(_stop.Token);
                var framing = Framing(Field, isResponse: true, noContent: exchange.Method == "HEAD" || status is 204 or 304);
                exchange.ResponseHead = text;
                exchange.Status = status;
                await SendAsync(to, head);
                await CopyBodyAsync(from, to, framing, bytes => exchange.ResponseBodyBytes += bytes, _stop.Token);
                if (status == 101)
                {
                    break;
                }
            }
        }
        finally
        {
            ShutdownSend(to);
        }
    }

    /// <summary>Content-Length, chunked (-1), none (0) or to the end of the connection (-2, responses only).</summary>
    private static long Framing(Func<string, string?> field, bool isResponse, bool noContent)
    {
        if (noContent)
        {
            return 0;
        }

        if (field("Transfer-Encoding") is { } coding && coding.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            return -1;
        }

        if (field("Content-Length") is { } length)
        {
            return long.Parse(length, CultureInfo.InvariantCulture);
        }

        return isResponse ? -2 : 0;
    }

    /// <summary>Copies one body as framed; <paramref name="counted"/> is told its content bytes before they are passed on.</summary>
    private static async Task CopyBodyAsync(WireReader from, Socket to, long framing, Action<long>? counted, CancellationToken cancel)
    {
        switch (framing)
        {
            case >= 0:
                await from.CopyAsync(to, framing, counted, cancel);
                return;
            case -2:
                await from.CopyToEndAsync(to, counted, cancel);
                return;
            default:
                while (true)
                {
                    var sizeLine = await from.ReadLineAsync(cancel) ?? throw new IOException("connection ended inside a chunked body");
                    await SendAsync(to, sizeLine);
                    var size = long.Parse(Encoding.Latin1.GetString(sizeLine).Split(';')[0].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                    if (size == 0)
                    {
                        // Trailer fields, then the empty line.
                        while (await from.ReadLineAsync(cancel) is { } trailer)
                        {
                            await SendAsync(to, trailer);
                            if (IsEmpty(trailer))
                            {
                                return;
                            }
                        }

                        throw new IOException("connection ended inside a chunked trailer");
                    }

                    counted?.Invoke(size);
                    await from.CopyAsync(to, size + 2, counted: null, cancel); // the data and its CRLF
                }
        }
    }

    private static bool IsEmpty(byte[] line) => line is [(byte)'\n'] or [(byte)'\r', (byte)'\n'];

    private static async Task SendAsync(Socket to, ReadOnlyMemory<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            var sent = await to.SendAsync(bytes, SocketFlags.None);
            bytes = bytes[sent..];
        }
    }

    private static void ShutdownSend(Socket socket)
    {
        try
        {
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }
    }

    /// <summary>Buffered reads off a socket: heads, lines and counted runs of bytes.</summary>
    private sealed class WireReader(Socket socket)
    {
        private readonly byte[] _buffer = new byte[64 * 1024];
        private int _start;
        private int _end;

        /// <summary>A message head up to and including its empty line; null when the connection ends between messages.</summary>
        public async Task<byte[]?> ReadHeadAsync(CancellationToken cancel)
        {
            var head = new MemoryStream();
            while (true)
            {
                var line = await ReadLineAsync(cancel);
                if (line is null)
                {
                    return head.Length == 0 ? null : throw new IOException("connection ended inside a message head");
                }

                if (head.Length == 0 && IsEmpty(line))
                {
                    continue; // an empty line before a message is allowed and ignored (RFC 9112 §2.2)
                }

                head.Write(line);
                if (IsEmpty(line))
                {
                    return head.ToArray();
                }
            }
        }

        /// <summary>One line with its CRLF (or LF); null at the end of the connection.</summary>
        public async Task<byte[]?> ReadLineAsync(CancellationToken cancel)
        {
            var line = new MemoryStream();
            while (true)
            {
                if (_start == _end && !await FillAsync(cancel))
                {
                    return line.Length == 0 ? null : throw new IOException("connection ended inside a line");
                }

                var newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
                if (newline >= 0)
                {
                    line.Write(_buffer, _start, newline + 1 - _start);
                    _start = newline + 1;
                    return line.ToArray();
                }

                line.Write(_buffer, _start, _end - _start);
                _start = _end;
            }
        }

        public async Task CopyAsync(Socket to, long count, Action<long>? counted, CancellationToken cancel)
        {
            while (count > 0)
            {
                if (_start == _end && !await FillAsync(cancel))
                {
                    throw new IOException($"connection ended {count} bytes short of a body");
                }

                var take = (int)Math.Min(count, _end - _start);
                counted?.Invoke(take);
                await SendAsync(to, _buffer.AsMemory(_start, take));
                _start += take;
                count -= take;
            }
        }

        public async Task CopyToEndAsync(Socket to, Action<long>? counted, CancellationToken cancel)
        {
            while (_start < _end || await FillAsync(cancel))
            {
                counted?.Invoke(_end - _start);
                await SendAsync(to, _buffer.AsMemory(_start, _end - _start));
                _start = _end;
            }
        }

        private async Task<bool> FillAsync(CancellationToken cancel)
        {
            _start = 0;
            _end = await socket.ReceiveAsync(_buffer, SocketFlags.None, cancel);
            return _end > 0;
        }
    }
}
