using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Hosting;

/// <summary>
/// Closes a client connection that takes no response bytes for --client-send-timeout while sidekick has bytes
/// waiting for it. Backpressure bounds what a client that stops reading holds in memory; nothing bounded how long
/// it held its connection and the backend connection behind it (a hung or suspended client process, or one that
/// opens many downloads and reads none). nginx's send_timeout (60 s) and HAProxy's "timeout client" bound the same.
/// A slow client is not a stalled one: the clock runs only while a flush waits for the client to take bytes, and
/// restarts with each flush that goes through (the transport lets a flush through once under 64 KiB wait), so a
/// client is cut only when it took almost nothing for the whole timeout. Installed before TLS: what it watches
/// are the connection's own sends, for HTTP/1.1, HTTP/2 and TLS alike.
/// The last bytes of a connection are watched too. When the server is done with a connection (a response with
/// Connection: close, an idle keep-alive connection closed) the transport still sends what its output holds before it
/// closes the socket, for as long as the client takes it: a client that stopped reading with under 64 KiB left there
/// made no flush wait, and held its connection for ever (30 non-reading clients, 3 stuck, measured). Such a
/// connection is cut once its kernel send queue has not moved for the timeout.
/// </summary>
internal sealed class ClientSendTimeout : IDisposable
{
    private readonly TimeSpan _timeout;
    private readonly TimeProvider _time;
    private readonly ITimer _sweep;
    // Connections' and HTTP/2 streams' flushes waiting for their client.
    private readonly ConcurrentDictionary<WatchedWriter, byte> _waiting = new();
    private readonly ConcurrentDictionary<WatchedOutput, byte> _draining = new();
    private long _stalls;
    private long _cut;

    public ClientSendTimeout(TimeSpan timeout, TimeProvider time)
    {
        _timeout = timeout;
        _time = time;
        // A connection is cut between the timeout and a quarter of it later (at most a second later).
        var period = TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 4, TimeSpan.TicksPerMillisecond, TimeSpan.TicksPerSecond));
        _sweep = time.CreateTimer(static state => ((ClientSendTimeout)state!).Sweep(), this, period, period);
    }

    /// <summary>Told the client's address when its connection is cut.</summary>
    public event Action<EndPoint?, TimeSpan>? Cut;

    /// <summary>Client connections closed because they took no response bytes for the timeout.</summary>
    public long Closed => Interlocked.Read(ref _cut);

    /// <summary>Flushes that had to wait for a client so far (for tests: each starts the clock afresh).</summary>
    internal long Stalls => Interlocked.Read(ref _stalls);

    /// <summary>Connections and HTTP/2 streams whose flush is waiting for their client now.</summary>
    internal int Waiting => _waiting.Count;

    /// <summary>Connections the server is done with whose transport has not closed them yet (their last bytes unsent).</summary>
    internal int Draining => _draining.Count;

    public ConnectionDelegate Install(ConnectionDelegate next) => async connection =>
    {
        var transport = connection.Transport;
        var output = new WatchedOutput(transport.Output, connection, this);
        connection.Transport = new DuplexPipe(transport.Input, output);
        try
        {
            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            WatchDrain(output);
        }
    };

    /// <summary>
    /// Watches one HTTP/2 stream's response body (call before anything reads the response body feature). A stream's
    /// flush waits for the client's flow-control window, not the socket: a client that asks with HTTP/2's default
    /// 65,535-byte window and then hangs never makes a socket send wait, so the connection's watch never saw it, and
    /// its request held its backend exchange for ever (39 s and counting against a 3 s timeout, in a review). The
    /// stream alone is cut (reset); the connection's other streams go on.
    /// </summary>
    public void WatchStream(HttpContext context)
    {
        if (context.Features.Get<IHttpResponseBodyFeature>() is { } body)
        {
            context.Features.Set<IHttpResponseBodyFeature>(new WatchedStream(body, context, this));
        }
    }

    public void Dispose() => _sweep.Dispose();

    private void Sweep()
    {
        var now = _time.GetTimestamp();
        foreach (var waiting in _waiting.Keys)
        {
            if (_time.GetElapsedTime(Volatile.Read(ref waiting.Since), now) >= _timeout && _waiting.TryRemove(waiting, out _))
            {
                CutOff(waiting);
            }
        }

        foreach (var draining in _draining.Keys)
        {
            // The client took bytes since the last sweep when the kernel's send queue changed: the clock starts again.
            var queued = draining.SendQueued();
            if (queued == WatchedOutput.SocketClosed)
            {
                draining.Drained(); // the transport closed the socket: nothing left to watch
            }
            else if (queued != draining.Queued || queued == 0)
            {
                // (An empty queue: the client has every byte sent so far; whatever is late is not its doing.)
                draining.Queued = queued;
                Volatile.Write(ref draining.Since, now);
            }
            else if (_time.GetElapsedTime(Volatile.Read(ref draining.Since), now) >= _timeout && _draining.TryRemove(draining, out _))
            {
                CutOff(draining);
            }
        }
    }

    private void CutOff(WatchedWriter watched)
    {
        if (!watched.TryCut($"the client took no response bytes for {Cli.GoDuration.Format(_timeout)} (--client-send-timeout)", out var client))
        {
            return; // closed meanwhile: not cut
        }

        Interlocked.Increment(ref _cut);
        Cut?.Invoke(client, _timeout);
    }

    /// <summary>
    /// The server is done with the connection; until the transport closes its socket, what is left of its output is
    /// watched. Once per connection, not per request.
    /// </summary>
    /// <remarks>
    /// ConnectionClosed is not that close: both transports fire it when the client's side ends (a FIN), and a client
    /// that sends one and then reads nothing left the send loop blocked for ever once the token had ended the watch.
    /// The token ends the watch only where no socket can be asked; otherwise the sweep sees the socket closed.
    /// </remarks>
    private void WatchDrain(WatchedOutput output)
    {
        CancellationToken closed;
        try
        {
            closed = output.Connection.ConnectionClosed;
        }
        catch (ObjectDisposedException)
        {
            return; // closed and gone already
        }

        var queued = output.SendQueued();
        if (queued == WatchedOutput.SocketClosed || (queued == WatchedOutput.NoSocket && closed.IsCancellationRequested))
        {
            return;
        }

        output.Queued = queued;
        Volatile.Write(ref output.Since, _time.GetTimestamp());
        _draining.TryAdd(output, 0);
        if (queued == WatchedOutput.NoSocket)
        {
            // Runs at once when the connection closed meanwhile.
            closed.UnsafeRegister(static state => ((WatchedOutput)state!).Drained(), output);
        }
    }

    /// <summary>A flush the client holds up: watched until it goes through, fails or what it writes to is cut.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<FlushResult> WatchAsync(WatchedWriter watched, ValueTask<FlushResult> flush)
    {
        Volatile.Write(ref watched.Since, _time.GetTimestamp());
        _waiting.TryAdd(watched, 0);
        Interlocked.Increment(ref _stalls);
        try
        {
            return await flush.ConfigureAwait(false);
        }
        finally
        {
            _waiting.TryRemove(watched, out _);
        }
    }

    /// <summary>
    /// A response's writer as the server (a connection) or the request path (an HTTP/2 stream) uses it; only flushes
    /// that do not complete at once are watched.
    /// </summary>
    private abstract class WatchedWriter(PipeWriter inner, ClientSendTimeout owner) : PipeWriter
    {
        /// <summary>When the flush now waiting began, or the drain last moved (a timestamp of the owner's clock).</summary>
        public long Since;

        protected ClientSendTimeout Owner => owner;

        /// <summary>Cuts what this writer writes to; false when it was gone already. <paramref name="client"/>: who is cut.</summary>
        public abstract bool TryCut(string reason, out EndPoint? client);

        public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;

        public override long UnflushedBytes => inner.UnflushedBytes;

        public override void Advance(int bytes) => inner.Advance(bytes);

        public override Memory<byte> GetMemory(int sizeHint = 0) => inner.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => inner.GetSpan(sizeHint);

        public override void CancelPendingFlush() => inner.CancelPendingFlush();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            var flush = inner.FlushAsync(cancellationToken);
            return flush.IsCompleted ? flush : owner.WatchAsync(this, flush);
        }

        public override ValueTask<FlushResult> WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
        {
            var write = inner.WriteAsync(source, cancellationToken);
            return write.IsCompleted ? write : owner.WatchAsync(this, write);
        }
    }

    /// <summary>An HTTP/2 stream's response body: cut, it is reset alone (the connection's other streams go on).</summary>
    private sealed class WatchedStream(IHttpResponseBodyFeature inner, HttpContext context, ClientSendTimeout owner)
        : WatchedWriter(inner.Writer, owner), IHttpResponseBodyFeature
    {
        /// <summary>RST_STREAM's INTERNAL_ERROR, the code Kestrel resets an aborted stream with.</summary>
        private const int InternalError = 0x2;

        private Stream? _stream;

        /// <remarks>
        /// Reset through Kestrel's own stream, not <see cref="HttpContext.Abort"/>: that goes to whatever lifetime
        /// feature the request path put in front, and on YARP's path a download's resume watch stands there and
        /// only notes the abort, to decide on it once the forwarder returns. The forwarder was waiting on this very
        /// flush, so it never returned: the stream was not reset, RequestAborted never fired, and the backend
        /// exchange was held until the client's connection ended. Kestrel's reset fires RequestAborted, which
        /// cancels the waiting write, and the forwarder lets its backend go.
        /// </remarks>
        public override bool TryCut(string reason, out EndPoint? client)
        {
            var connection = context.Connection;
            client = connection.RemoteIpAddress is { } ip ? new IPEndPoint(ip, connection.RemotePort) : null;
            if (context.Features.Get<IHttpResetFeature>() is { } reset)
            {
                reset.Reset(InternalError);
            }
            else
            {
                context.Abort(); // not Kestrel's HTTP/2 (no reset to ask for): the request's own abort
            }

            return true;
        }

        Stream IHttpResponseBodyFeature.Stream => _stream ??= AsStream(leaveOpen: true);

        PipeWriter IHttpResponseBodyFeature.Writer => this;

        void IHttpResponseBodyFeature.DisableBuffering() => inner.DisableBuffering();

        Task IHttpResponseBodyFeature.StartAsync(CancellationToken cancellationToken) => inner.StartAsync(cancellationToken);

        Task IHttpResponseBodyFeature.SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken) =>
            SendFileFallback.SendFileAsync(((IHttpResponseBodyFeature)this).Stream, path, offset, count, cancellationToken);

        Task IHttpResponseBodyFeature.CompleteAsync() => inner.CompleteAsync();
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    /// <summary>The connection's output as the server writes it; only flushes that do not complete at once are watched.</summary>
    private sealed class WatchedOutput(PipeWriter inner, ConnectionContext connection, ClientSendTimeout owner) : WatchedWriter(inner, owner)
    {
        /// <summary>While draining: the kernel send queue's length at the last sweep.</summary>
        public int Queued;

        public ConnectionContext Connection { get; } = connection;

        public override bool TryCut(string reason, out EndPoint? client)
        {
            client = null;
            try
            {
                client = Connection.RemoteEndPoint;
                Connection.Abort(new ConnectionAbortedException(reason));
                return true;
            }
            catch (ObjectDisposedException)
            {
                return false;
            }
        }

        /// <summary><see cref="SendQueued"/> where no socket can be asked (no socket feature, not Linux).</summary>
        public const int NoSocket = -1;

        /// <summary><see cref="SendQueued"/> of a connection whose socket is closed.</summary>
        public const int SocketClosed = -2;

        /// <summary>
        /// Bytes the connection's kernel send queue holds; <see cref="NoSocket"/> where that cannot be read (the drain's
        /// clock then never restarts), <see cref="SocketClosed"/> once the socket is closed.
        /// </summary>
        public int SendQueued()
        {
            if (!OperatingSystem.IsLinux() || Connection.Features.Get<IConnectionSocketFeature>()?.Socket is not { } socket)
            {
                return NoSocket;
            }

            if (socket.SafeHandle.IsClosed)
            {
                return SocketClosed; // asked every sweep until then: no exception thrown per closed connection
            }

            try
            {
                var queued = Platform.Libc.SendQueued(socket.SafeHandle);
                return queued >= 0 ? queued : SocketClosed;
            }
            catch (ObjectDisposedException)
            {
                return SocketClosed;
            }
        }

        public void Drained() => Owner._draining.TryRemove(this, out _);
    }
}
