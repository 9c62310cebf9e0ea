using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Connections;

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
/// </summary>
internal sealed class ClientSendTimeout : IDisposable
{
    private readonly TimeSpan _timeout;
    private readonly TimeProvider _time;
    private readonly ITimer _sweep;
    private readonly ConcurrentDictionary<WatchedOutput, byte> _waiting = new();
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

    /// <summary>Connections whose flush is waiting for their client now.</summary>
    internal int Waiting => _waiting.Count;

    public ConnectionDelegate Install(ConnectionDelegate next) => connection =>
    {
        var transport = connection.Transport;
        connection.Transport = new DuplexPipe(transport.Input, new WatchedOutput(transport.Output, connection, this));
        return next(connection);
    };

    public void Dispose() => _sweep.Dispose();

    private void Sweep()
    {
        var now = _time.GetTimestamp();
        foreach (var waiting in _waiting.Keys)
        {
            if (_time.GetElapsedTime(Volatile.Read(ref waiting.Since), now) >= _timeout && _waiting.TryRemove(waiting, out _))
            {
                Interlocked.Increment(ref _cut);
                waiting.Connection.Abort(new ConnectionAbortedException(
                    $"the client took no response bytes for {Cli.GoDuration.Format(_timeout)} (--client-send-timeout)"));
                Cut?.Invoke(waiting.Connection.RemoteEndPoint, _timeout);
            }
        }
    }

    /// <summary>A flush the client holds up: watched until it goes through, fails or the connection is cut.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<FlushResult> WatchAsync(WatchedOutput output, ValueTask<FlushResult> flush)
    {
        Volatile.Write(ref output.Since, _time.GetTimestamp());
        _waiting.TryAdd(output, 0);
        Interlocked.Increment(ref _stalls);
        try
        {
            return await flush.ConfigureAwait(false);
        }
        finally
        {
            _waiting.TryRemove(output, out _);
        }
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    /// <summary>The connection's output as the server writes it; only flushes that do not complete at once are watched.</summary>
    private sealed class WatchedOutput(PipeWriter inner, ConnectionContext connection, ClientSendTimeout owner) : PipeWriter
    {
        /// <summary>When the flush now waiting began (a timestamp of the owner's clock).</summary>
        public long Since;

        public ConnectionContext Connection { get; } = connection;

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
}
