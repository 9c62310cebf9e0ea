using System.Buffers;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Sidekick.Networking;

namespace Sidekick.Forwarding.Http1;

/// <summary>
/// One keep-alive HTTP/1.1 connection to a backend. It holds a receive buffer only while it carries a
/// request (idle connections keep none, so thousands of them cost a socket each and little memory), and
/// knows when it was last used so the pool can retire it.
/// </summary>
internal sealed class BackendConnection : IDisposable
{
    /// <summary>Used for long bodies: fewer system calls per megabyte.</summary>
    public const int LargeBufferSize = 64 * 1024;

    private readonly Socket _socket;
    // Set when the socket is served by sidekick's event loops; I/O then goes through it, not the .NET engine.
    private readonly LoopSocket? _loopSocket;
    private byte[]? _buffer;
    private int _start;
    private int _end;
    private int _closed;
    private long _activityTimeoutMilliseconds;

    public BackendConnection(Socket socket, BackendConnectionPool pool)
    {
        _socket = socket;
        Pool = pool;
    }

    public BackendConnection(LoopSocket socket, BackendConnectionPool pool)
    {
        _socket = socket.Socket;
        _loopSocket = socket;
        Pool = pool;
    }

    public BackendConnectionPool Pool { get; }

    /// <summary>The index of the event loop serving the socket (0 on the .NET engine): its lane in the pool.</summary>
    public int Lane => _loopSocket?.Loop.Index ?? 0;

    /// <summary>True once a request completed on it: a failure before any response byte may be a stale connection.</summary>
    public bool HasServedRequest { get; set; }

    /// <summary>The pool's clock (<see cref="BackendConnectionPool.Now"/>) when it went back to the pool.</summary>
    public long IdleSince { get; set; }

    /// <summary>How long the backend said it keeps this connection open while idle, in seconds (0: it did not say).</summary>
    public int KeepAliveSeconds { get; set; }

    /// <summary>The pool's clock after which an exchange without progress is cut (0: idle).</summary>
    public long ActivityDeadline { get; set; }

    /// <summary>Set when the pool cut the exchange for inactivity, so the error says "timed out".</summary>
    public bool TimedOut { get; private set; }

    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    /// <summary>Received bytes not yet consumed.</summary>
    public ReadOnlySpan<byte> Buffered => _buffer.AsSpan(_start, _end - _start);

    public Memory<byte> BufferedMemory => _buffer.AsMemory(_start, _end - _start);

    public int BufferedCount => _end - _start;

    public void Consume(int count) => _start += count;

    /// <summary>Takes a receive buffer for one exchange, which is cut after <paramref name="activityTimeout"/> without progress.</summary>
    public void BeginExchange(TimeSpan activityTimeout)
    {
        _buffer ??= ExchangeBuffers.Rent();
        _start = _end = 0;
        _activityTimeoutMilliseconds = (long)activityTimeout.TotalMilliseconds;
        Touch();
    }

    /// <summary>Notes progress (bytes moved either way) for the activity deadline.</summary>
    public void Touch() => ActivityDeadline = Pool.Now + _activityTimeoutMilliseconds;

    /// <summary>Gives the receive buffer back; the connection is then idle (or about to be closed).</summary>
    public void EndExchange()
    {
        ActivityDeadline = 0;
        if (_buffer is { } buffer)
        {
            _buffer = null;
            ExchangeBuffers.Return(buffer);
        }
    }

    /// <summary>Switches to the large buffer for a long body, keeping what was already received.</summary>
    public void UseLargeBuffer()
    {
        if (_buffer is not { Length: < LargeBufferSize } small)
        {
            return;
        }

        var large = ArrayPool<byte>.Shared.Rent(LargeBufferSize);
        var count = _end - _start;
        small.AsSpan(_start, count).CopyTo(large);
        ExchangeBuffers.Return(small);
        _buffer = large;
        _start = 0;
        _end = count;
    }

    /// <summary>
    /// Sends a request head (and its inline body) at the start of an exchange. On the event loop the socket
    /// sends it all and the send is returned as is: the loop defers it to the end of its batch, so awaiting
    /// it here would cost a state machine per request. The activity deadline set by
    /// <see cref="BeginExchange"/> covers the send; the first bytes received move it on.
    /// </summary>
    public ValueTask SendAsync(ReadOnlyMemory<byte> data) =>
        _loopSocket is { } loopSocket ? loopSocket.SendAsync(data) : SendInPartsAsync(data);

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder))]
    private async ValueTask SendInPartsAsync(ReadOnlyMemory<byte> data)
    {
        while (!data.IsEmpty)
        {
            var sent = await _socket.SendAsync(data, SocketFlags.None);
            data = data[sent..];
            Touch();
        }
    }

    /// <summary>
    /// Receives more bytes of a body after those buffered, as progress; returns how many (0 at end of stream). A buffer
    /// full of unconsumed bytes grows, up to <paramref name="limit"/>, past which it throws.
    /// </summary>
    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder<>))]
    public async ValueTask<int> ReceiveAsync(int limit = LargeBufferSize)
    {
        var received = await ReceiveIntoAsync(ReceiveRoom(limit));
        Received(received);
        Touch();
        return received;
    }

    /// <summary>
    /// The free space after the buffered bytes, for <see cref="ReceiveIntoAsync"/> then <see cref="Received"/>:
    /// the exchange's hot path awaits the socket in these two steps, without a state machine of
    /// <see cref="ReceiveAsync"/>'s in between. A buffer full of unconsumed bytes grows, up to
    /// <paramref name="limit"/>, past which it throws.
    /// </summary>
    public Memory<byte> ReceiveRoom(int limit)
    {
        var buffer = _buffer!;
        if (_start == _end)
        {
            _start = _end = 0;
        }
        else if (_end == buffer.Length)
        {
            if (_start > 0)
            {
                buffer.AsSpan(_start, _end - _start).CopyTo(buffer);
                _end -= _start;
                _start = 0;
            }
            else
            {
                if (buffer.Length >= limit)
                {
                    throw new HttpRequestException(HttpRequestError.InvalidResponse, $"the backend sent more than {limit} bytes of response head or chunk framing");
                }

                var larger = ArrayPool<byte>.Shared.Rent(Math.Min(buffer.Length * 2, limit));
                buffer.AsSpan(0, _end).CopyTo(larger);
                ExchangeBuffers.Return(buffer);
                _buffer = buffer = larger;
            }
        }

        return buffer.AsMemory(_end);
    }

    /// <summary>
    /// Counts bytes of a response head received into <see cref="ReceiveRoom"/> as buffered, without moving the activity
    /// deadline: the head as a whole must come within the activity timeout of the request (as on YARP's path), or a
    /// backend dripping it a byte at a time held the client for ever.
    /// </summary>
    public void Received(int count) => _end += count;

    /// <summary>
    /// One socket receive into <paramref name="destination"/>; returns how many bytes, 0 at end of stream.
    /// The caller notes the progress (<see cref="Received"/> or <see cref="Touch"/>).
    /// </summary>
    public ValueTask<int> ReceiveIntoAsync(Memory<byte> destination) =>
        _loopSocket?.ReceiveAsync(destination) ?? _socket.ReceiveAsync(destination, SocketFlags.None);

    /// <summary>
    /// Whether an idle connection was closed (or sent something unasked) by the backend: a non-blocking
    /// readability check, paid only for connections idle long enough for a backend to have dropped them.
    /// </summary>
    /// <summary>
    /// Whether something may have arrived on this idle connection: bytes after the response (a backend answering
    /// twice, a body after a HEAD response), or its close. Without an event loop nothing tells, so it may have.
    /// </summary>
    public bool MayHaveArrived => _loopSocket?.MayBeReadable ?? true;

    public bool LooksDead()
    {
        try
        {
            // Readable with nothing asked for means end of stream, a reset, or stray bytes: unusable either way.
            return _socket.Poll(0, SelectMode.SelectRead);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            return true;
        }
    }

    /// <summary>
    /// Cuts a stalled exchange (the pending receive or send fails at once), unless it ended or made progress since the
    /// sweeper found it stalled at <paramref name="now"/>: the connection may be another request's by then.
    /// </summary>
    public void TimeOut(long now)
    {
        if (ActivityDeadline is var deadline && (deadline == 0 || now <= deadline))
        {
            return;
        }

        TimedOut = true;
        Dispose();
    }

    public void Dispose()
    {
        // The exchange, a client abort and the pool's sweeper may all close it; only the first does.
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }

        ((IDisposable?)_loopSocket ?? _socket).Dispose();
        Pool.OnClosed(this);
    }
}
