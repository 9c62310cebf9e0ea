using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Networking;

/// <summary>
/// One client connection as Kestrel sees it: two pipes fed and drained by a <see cref="LoopSocket"/>. Both
/// pipes run their continuations inline, so bytes that arrive are parsed, forwarded and answered on the
/// loop thread without a hop through the thread pool (the request path never blocks).
/// </summary>
internal sealed class LoopConnection : ConnectionContext, IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature,
    IConnectionLifetimeFeature, IConnectionEndPointFeature, IMemoryPoolFeature, IConnectionSocketFeature
{
    /// <summary>Request bytes Kestrel may hold unparsed before the socket is read no further (Kestrel's default).</summary>
    private const long InputPause = 1024 * 1024;

    /// <summary>
    /// Response bytes waiting for the socket before a writer is held back: twice Kestrel's default, so that a 64 KiB
    /// response with its head never waits. A held-back writer costs a thread-pool hop: Kestrel's response writer
    /// (its ConcurrentPipeWriter) completes a waiting flush through a task that runs its continuation
    /// asynchronously. Sends made at the end of the loop's batch let a whole 64 KiB body gather in the pipe first,
    /// so at 64 KiB x 32 every response waited: 1.1 context switches per request, 0.4-0.5 with this (HAProxy 0.46),
    /// and 49-51 against 56-68 µs of CPU per request (two interleaved rounds). A client that stops reading holds
    /// up to this much here (the bounded-memory test allows 1 MiB per stalled reader); 256 KiB measured no better
    /// at 64 KiB and worse at 1 MiB (more buffers in flight than the caches hold).
    /// </summary>
    private const long OutputPause = 128 * 1024;

    /// <summary>Space asked of the input pipe per receive: a block of the pool, so most requests fit one read.</summary>
    private const int MinimumReceiveSpace = 2048;

    private static long s_lastId;

    private readonly LoopSocket _socket;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly GatheredSends _sendScheduler;
    private readonly CancellationTokenSource _closed = new();
    private Task _receiving = Task.CompletedTask;
    private Task _sending = Task.CompletedTask;
    private string? _id;
    private IDictionary<object, object?>? _items;
    private volatile ConnectionAbortedException? _abortReason;
    private int _closedFired;

    public LoopConnection(LoopSocket socket, Socket accepted, MemoryPool<byte> pool)
    {
        _socket = socket;
        Socket = accepted;
        MemoryPool = pool;
        LocalEndPoint = accepted.LocalEndPoint;
        RemoteEndPoint = accepted.RemoteEndPoint;
        _input = new Pipe(new PipeOptions(pool, PipeScheduler.Inline, PipeScheduler.Inline, InputPause, InputPause / 2,
            pool.MaxBufferSize, useSynchronizationContext: false));
        _sendScheduler = new GatheredSends(socket.Loop);
        Lending = new LendingPool(pool);
        _output = new Pipe(new PipeOptions(Lending, _sendScheduler, PipeScheduler.Inline, OutputPause, OutputPause / 2,
            pool.MaxBufferSize, useSynchronizationContext: false));
        Transport = new DuplexPipe(_input.Reader, _output.Writer);
        var features = new FeatureCollection();
        features.Set<IConnectionIdFeature>(this);
        features.Set<IConnectionTransportFeature>(this);
        features.Set<IConnectionItemsFeature>(this);
        features.Set<IConnectionLifetimeFeature>(this);
        features.Set<IConnectionEndPointFeature>(this);
        features.Set<IMemoryPoolFeature>(this);
        features.Set<IConnectionSocketFeature>(this); // as Kestrel's own transport: ClientSendTimeout reads its send queue
        features.Set(this); // also how a forwarder finds Lending
        Features = features;
    }

    public override string ConnectionId
    {
        get => _id ??= Interlocked.Increment(ref s_lastId).ToString("x8", System.Globalization.CultureInfo.InvariantCulture);
        set => _id = value;
    }

    public override IFeatureCollection Features { get; }

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new ConnectionItems();
        set => _items = value;
    }

    public override IDuplexPipe Transport { get; set; }

    public override CancellationToken ConnectionClosed
    {
        get => _closed.Token;
        set => throw new NotSupportedException("the transport owns the closed token");
    }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    public MemoryPool<byte> MemoryPool { get; }

    /// <summary>The output pipe's pool, which a cache fill's spool buffer can be lent to (<see cref="LendingPool"/>).</summary>
    public LendingPool Lending { get; }

    public Socket Socket { get; }

    /// <summary>
    /// Lets the loop batch this connection's sends (<see cref="LoopSocket.DeferSends"/>): called by a connection
    /// middleware, which finds the connection among its features, once it knows it serves HTTP/1.1.
    /// </summary>
    public void DeferSends() => _socket.DeferSends();

    /// <summary>Whether this connection's sends wait for the loop's batch (what the middleware decided; tests read it).</summary>
    public bool SendsDeferred => _socket.SendsDeferred;

    /// <summary>
    /// Lets output flushed off the loop thread gather before it is sent (<see cref="GatheredSends"/>): called by a
    /// connection middleware once it knows the connection serves HTTP/2, whose frames are written from the thread pool.
    /// </summary>
    public void GatherOffLoopSends() => _sendScheduler.Start();

    /// <summary>Whether output flushed off the loop thread gathers before it is sent (tests read it).</summary>
    public bool SendsGathered => _sendScheduler.Gathering;

    public void Start()
    {
        _receiving = ReceiveAsync();
        _sending = SendAsync();
    }

    public override void Abort(ConnectionAbortedException abortReason)
    {
        _abortReason = abortReason;
        _output.Reader.CancelPendingRead();
        _socket.Shutdown();
    }

    public override async ValueTask DisposeAsync()
    {
        // The response bytes still in the output pipe are sent before the socket closes (the send loop ends
        // once it has drained the completed pipe); only Abort drops them.
        _input.Reader.Complete();
        _output.Writer.Complete();
        await _receiving;
        await _sending;
        _socket.Dispose();
        // The closed token fires before it is disposed: the queued cancel (FireClosed) may not have run yet, and a
        // connection whose token never fires stays watched (ClientSendTimeout's drain watch ends on it).
        CancelClosed();
        _closed.Dispose();
        await base.DisposeAsync();
    }

    private async Task ReceiveAsync()
    {
        Exception? error = null;
        try
        {
            var writer = _input.Writer;
            while (true)
            {
                // Take a block of the pool only once bytes are there: an idle keep-alive connection holds none.
                await _socket.WaitReadableAsync();
                var received = await _socket.ReceiveAsync(writer.GetMemory(MinimumReceiveSpace));
                if (received == 0)
                {
                    break; // the client finished sending
                }

                writer.Advance(received);
                var flushed = await writer.FlushAsync();
                if (flushed.IsCompleted || flushed.IsCanceled)
                {
                    break; // Kestrel stopped reading
                }
            }
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset)
        {
            error = new ConnectionResetException(ex.Message, ex);
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.OperationAborted or SocketError.ConnectionAborted or SocketError.Shutdown)
        {
            error = _abortReason ?? new ConnectionAbortedException(ex.Message, ex);
        }
        catch (Exception ex)
        {
            error = ex;
        }
        finally
        {
            _input.Writer.Complete(_abortReason ?? error);
            FireClosed();
        }
    }

    private async Task SendAsync()
    {
        Exception? error = null;
        try
        {
            var reader = _output.Reader;
            while (true)
            {
                var result = await reader.ReadAsync();
                if (result.IsCanceled)
                {
                    break; // aborted
                }

                var buffer = result.Buffer;
                if (!buffer.IsEmpty)
                {
                    await _socket.SendAsync(buffer);
                }

                reader.AdvanceTo(buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset)
        {
            error = new ConnectionResetException(ex.Message, ex);
        }
        catch (Exception ex)
        {
            error = _abortReason ?? (ex is SocketException ? new ConnectionAbortedException(ex.Message, ex) : ex);
        }
        finally
        {
            // Done writing (or unable to): the receive side ends too, as Kestrel's own transport does.
            _socket.Shutdown();
            _output.Reader.Complete(error);
        }
    }

    /// <summary>Tells Kestrel (and through it the request) that the client is gone, off the loop thread.</summary>
    private void FireClosed()
    {
        if (Interlocked.Exchange(ref _closedFired, 1) == 0)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static state => ((LoopConnection)state!).CancelClosed(), this, preferLocal: false);
        }
    }

    private void CancelClosed()
    {
        try
        {
            _closed.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Disposed first: nobody is listening any more.
        }
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
