using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using Sidekick.Platform;

namespace Sidekick.Networking;

/// <summary>
/// A non-blocking TCP socket served by an <see cref="EventLoop"/>. It remembers what the kernel last said
/// about readiness, so a receive is attempted only when data may be there: after a short read or EAGAIN it
/// waits for the next edge instead of asking again (the .NET engine always tries first, one system call
/// that finds nothing per request and direction). One receive and one send may be pending at a time; their
/// completions are reusable objects, so waiting allocates nothing.
/// </summary>
internal sealed class LoopSocket : IDisposable
{
    private const int MaxVectors = 32;

    private readonly SafeSocketHandle _handle;
    private readonly ReceiveOperation _receive;
    private readonly SendOperation _send;
    private bool _deferSends;
    private MemoryHandle[]? _pins;
    // Readiness bookkeeping per direction: the loop counts edges, an operation notes the count it last saw
    // drained; equal counts mean nothing new has arrived since the kernel said EAGAIN.
    private int _readEdges;
    private int _readDrained;
    private int _writeEdges = 1;
    private int _writeDrained;
    // The peer finished or the connection failed: the next receive answers at once (0 or the error), even
    // right after a short read that returned the data before the end, so it is never waited for.
    private volatile bool _readEnded;
    private int _closed;

    private LoopSocket(Socket socket, EventLoop loop, bool connecting, bool deferSends)
    {
        _deferSends = deferSends;
        Socket = socket;
        socket.Blocking = false;
        _handle = socket.SafeHandle;
        Loop = loop;
        _receive = new ReceiveOperation(this);
        _send = new SendOperation(this);
        if (connecting)
        {
            _writeEdges = 0;
        }

        loop.Register(this, (int)_handle.DangerousGetHandle());
    }

    /// <summary>The .NET socket underneath: options, addresses and shutdown go through it, I/O does not.</summary>
    public Socket Socket { get; }

    /// <summary>The loop serving this socket.</summary>
    public EventLoop Loop { get; }

    /// <summary>The loop's key for this socket's events.</summary>
    public ulong Token { get; set; }

    /// <summary>
    /// From now on, sends asked for on the loop thread wait for the end of its batch, as a backend connection's
    /// do from the start (a client connection once it is known to serve HTTP/1.1: <c>Hosting/BatchedSends</c>).
    /// </summary>
    public void DeferSends() => _deferSends = true;

    public bool SendsDeferred => _deferSends;

    /// <summary>
    /// Serves an accepted (connected) socket; its sends go out at once until <see cref="DeferSends"/>.
    /// </summary>
    public static LoopSocket Accepted(Socket socket, EventLoop loop) => new(socket, loop, connecting: false, deferSends: false);

    /// <summary>Connects to <paramref name="endpoint"/> without blocking; a cancelled connect closes the socket.</summary>
    public static async ValueTask<LoopSocket> ConnectAsync(IPEndPoint endpoint, EventLoop loop, CancellationToken cancellationToken)
    {
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, Blocking = false };
        LoopSocket? connection = null;
        try
        {
            var pending = false;
            try
            {
                socket.Connect(endpoint);
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
            {
                pending = true;
            }

            // Registered only now: an unconnected socket reports itself writable (and hung up) at once.
            connection = new LoopSocket(socket, loop, connecting: pending, deferSends: true);
            if (pending)
            {
                using (cancellationToken.UnsafeRegister(static state => ((LoopSocket)state!).Dispose(), connection))
                {
                    await connection._send.Wait(default, connecting: true);
                }
            }

            return connection;
        }
        catch (Exception ex)
        {
            ((IDisposable?)connection ?? socket).Dispose();
            if (ex is SocketException && cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException(cancellationToken);
            }

            throw;
        }
    }

    /// <summary>Receives into <paramref name="buffer"/> (not empty); 0 at end of stream.</summary>
    public ValueTask<int> ReceiveAsync(Memory<byte> buffer)
    {
        var received = TryReceive(buffer.Span);
        return received >= 0 ? new ValueTask<int>(received) : _receive.Wait(buffer);
    }

    /// <summary>
    /// Completes once bytes or the end of the stream may be waiting, without taking a buffer, so an idle
    /// connection holds no memory (a spurious edge is possible: the receive that follows may still wait).
    /// </summary>
    public ValueTask WaitReadableAsync() => MaybeReadable ? default : _receive.WaitReadable();

    public ValueTask SendAsync(ReadOnlyMemory<byte> data) => SendAsync(new ReadOnlySequence<byte>(data));

    /// <summary>
    /// Sends all of <paramref name="data"/> (several segments in one system call); asked for on the loop's
    /// thread during a batch of events, once the batch is done (<see cref="EventLoop.TryDeferSend"/>).
    /// </summary>
    public ValueTask SendAsync(ReadOnlySequence<byte> data) =>
        _deferSends && Loop.TryDeferSend(this) ? _send.WaitDeferred(data)
        : TrySend(ref data) ? default : _send.Wait(data, connecting: false);

    /// <summary>Makes the send the loop deferred to the end of its batch (it may still wait for room).</summary>
    public void SendDeferred() => _send.TryComplete();

    /// <summary>
    /// Shuts both directions down: pending and later operations end (end of stream or an error). A send the
    /// loop deferred to the end of its batch is made first, as far as the socket takes it without waiting:
    /// it would have gone out at once without the deferral (a response Kestrel wrote just before aborting).
    /// </summary>
    public void Shutdown()
    {
        _send.TryComplete();
        try
        {
            Socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Not connected or already closed: nothing left to shut.
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }

        // Pending operations fail now rather than wait for an event that a closed descriptor never gets.
        OnReadiness(Libc.EPOLLIN | Libc.EPOLLOUT);
        Socket.Dispose();
        Loop.Unregister(this);
    }

    /// <summary>Called by the loop with the events the kernel reported.</summary>
    public void OnReadiness(uint events)
    {
        if ((events & (Libc.EPOLLRDHUP | Libc.EPOLLHUP | Libc.EPOLLERR)) != 0)
        {
            _readEnded = true;
        }

        if ((events & (Libc.EPOLLIN | Libc.EPOLLRDHUP | Libc.EPOLLHUP | Libc.EPOLLERR)) != 0)
        {
            Interlocked.Increment(ref _readEdges);
            _receive.TryComplete();
        }

        if ((events & (Libc.EPOLLOUT | Libc.EPOLLHUP | Libc.EPOLLERR)) != 0)
        {
            Interlocked.Increment(ref _writeEdges);
            _send.TryComplete();
        }
    }

    private bool MaybeReadable => Volatile.Read(ref _readEdges) != _readDrained || _readEnded;

    /// <summary>
    /// Whether the loop has seen bytes, an end of stream or an error arrive since a receive last emptied the socket;
    /// false means nothing came that the loop has been told of (an event still on its way is not seen).
    /// </summary>
    public bool MayBeReadable => MaybeReadable;

    private bool MaybeWritable => Volatile.Read(ref _writeEdges) != _writeDrained;

    /// <summary>Bytes received (0 at end of stream), or -1 when nothing can have arrived since the last look.</summary>
    private unsafe int TryReceive(Span<byte> buffer)
    {
        while (true)
        {
            var seen = Volatile.Read(ref _readEdges);
            if (seen == _readDrained && !_readEnded)
            {
                return -1;
            }

            ThrowIfClosed();
            nint received;
            try
            {
                fixed (byte* destination = buffer)
                {
                    received = Libc.recv(_handle, destination, buffer.Length, 0);
                }
            }
            catch (ObjectDisposedException)
            {
                throw new SocketException((int)SocketError.OperationAborted);
            }

            if (received > 0)
            {
                // A short read emptied the socket: anything later comes with a new edge.
                if (received < buffer.Length)
                {
                    _readDrained = seen;
                }

                return (int)received;
            }

            if (received == 0)
            {
                return 0; // end of stream stays readable: no edge will announce it twice
            }

            if (WouldBlock())
            {
                _readDrained = seen;
            }
        }
    }

    /// <summary>Sends from the front of <paramref name="data"/>; true when all of it went out.</summary>
    private bool TrySend(ref ReadOnlySequence<byte> data)
    {
        while (!data.IsEmpty)
        {
            var seen = Volatile.Read(ref _writeEdges);
            if (seen == _writeDrained)
            {
                return false;
            }

            ThrowIfClosed();
            nint sent;
            try
            {
                sent = data.IsSingleSegment ? SendOne(data.FirstSpan) : SendGathered(data);
            }
            catch (ObjectDisposedException)
            {
                throw new SocketException((int)SocketError.OperationAborted);
            }

            if (sent >= 0)
            {
                data = data.Slice(sent);
                continue;
            }

            if (WouldBlock())
            {
                _writeDrained = seen;
            }
        }

        return true;
    }

    private unsafe nint SendOne(ReadOnlySpan<byte> data)
    {
        fixed (byte* source = data)
        {
            return Libc.send(_handle, source, data.Length, Libc.MSG_NOSIGNAL);
        }
    }

    private unsafe nint SendGathered(in ReadOnlySequence<byte> data)
    {
        var vectors = stackalloc Libc.IoVector[MaxVectors];
        var pins = _pins ??= new MemoryHandle[MaxVectors];
        var count = 0;
        try
        {
            foreach (var segment in data)
            {
                if (segment.IsEmpty)
                {
                    continue;
                }

                pins[count] = segment.Pin();
                vectors[count] = new Libc.IoVector { Base = (byte*)pins[count].Pointer, Length = (nuint)segment.Length };
                if (++count == MaxVectors)
                {
                    break;
                }
            }

            var message = new Libc.MessageHeader { Vectors = vectors, VectorCount = (nuint)count };
            return Libc.sendmsg(_handle, &message, Libc.MSG_NOSIGNAL);
        }
        finally
        {
            for (var i = 0; i < count; i++)
            {
                pins[i].Dispose();
            }
        }
    }

    /// <summary>True once a pending connect finished; throws its error.</summary>
    private bool TryFinishConnect()
    {
        if (!MaybeWritable)
        {
            return false;
        }

        ThrowIfClosed();
        var error = (int)Socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
        return error == 0 ? true : throw new SocketException(error);
    }

    /// <summary>
    /// After a failed call: true for EAGAIN (wait for the next edge), false for EINTR (ask again at once);
    /// any other error is thrown as the <see cref="SocketException"/> .NET would report.
    /// </summary>
    private static bool WouldBlock()
    {
        var errno = Marshal.GetLastPInvokeError();
        if (errno == Libc.EAGAIN)
        {
            return true;
        }

        if (errno == Libc.EINTR)
        {
            return false;
        }

        throw new SocketException((int)Libc.ToSocketError(errno));
    }

    private void ThrowIfClosed()
    {
        if (Volatile.Read(ref _closed) != 0)
        {
            throw new SocketException((int)SocketError.OperationAborted);
        }
    }

    /// <summary>
    /// A pending operation, completed by whichever thread first finds it can finish: the loop on an edge,
    /// the caller right after arming (an edge may have come between its failed attempt and arming), or
    /// <see cref="Dispose"/>. <c>_waiting</c> hands the attempt to exactly one of them.
    /// </summary>
    private abstract class PendingOperation<TResult> : IValueTaskSource<TResult>, IValueTaskSource
    {
        private ManualResetValueTaskSourceCore<TResult> _core;
        private int _waiting;

        protected short Arm()
        {
            _core.Reset();
            Interlocked.Exchange(ref _waiting, 1);
            TryComplete();
            return _core.Version;
        }

        /// <summary>Arms without a first attempt: the loop makes it later (a deferred send).</summary>
        protected short ArmDeferred()
        {
            _core.Reset();
            Interlocked.Exchange(ref _waiting, 1);
            return _core.Version;
        }

        public void TryComplete()
        {
            while (Interlocked.Exchange(ref _waiting, 0) == 1)
            {
                bool done;
                TResult result;
                try
                {
                    done = TryFinish(out result);
                }
                catch (Exception ex)
                {
                    Forget();
                    _core.SetException(ex);
                    return;
                }

                if (done)
                {
                    Forget();
                    _core.SetResult(result);
                    return;
                }

                // Still not possible: wait again, unless an edge arrived while we looked.
                Interlocked.Exchange(ref _waiting, 1);
                if (!MaybeReady)
                {
                    return;
                }
            }
        }

        /// <summary>Whether an edge came since the kernel last said EAGAIN.</summary>
        protected abstract bool MaybeReady { get; }

        /// <summary>One attempt: true with the result when done; throws the operation's error.</summary>
        protected abstract bool TryFinish(out TResult result);

        /// <summary>Drops the references to the caller's memory once the operation is over.</summary>
        protected abstract void Forget();

        public TResult GetResult(short token) => _core.GetResult(token);

        void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }

    /// <summary>The pending receive, or the wait for readiness that comes before one.</summary>
    private sealed class ReceiveOperation(LoopSocket socket) : PendingOperation<int>
    {
        private Memory<byte> _buffer;
        private bool _readinessOnly;

        public ValueTask<int> Wait(Memory<byte> buffer)
        {
            _buffer = buffer;
            _readinessOnly = false;
            return new ValueTask<int>(this, Arm());
        }

        public ValueTask WaitReadable()
        {
            _readinessOnly = true;
            return new ValueTask(this, Arm());
        }

        protected override bool MaybeReady => socket.MaybeReadable;

        protected override bool TryFinish(out int received)
        {
            if (_readinessOnly)
            {
                received = 0;
                socket.ThrowIfClosed();
                return socket.MaybeReadable;
            }

            received = socket.TryReceive(_buffer.Span);
            return received >= 0;
        }

        protected override void Forget() => _buffer = default;
    }

    /// <summary>The pending send (or connect): done when the socket took everything (or connected).</summary>
    private sealed class SendOperation(LoopSocket socket) : PendingOperation<bool>
    {
        private ReadOnlySequence<byte> _remaining;
        private bool _connecting;

        public ValueTask Wait(ReadOnlySequence<byte> remaining, bool connecting)
        {
            _remaining = remaining;
            _connecting = connecting;
            return new ValueTask(this, Arm());
        }

        public ValueTask WaitDeferred(ReadOnlySequence<byte> remaining)
        {
            _remaining = remaining;
            _connecting = false;
            return new ValueTask(this, ArmDeferred());
        }

        protected override bool MaybeReady => socket.MaybeWritable;

        protected override bool TryFinish(out bool done)
        {
            done = _connecting ? socket.TryFinishConnect() : socket.TrySend(ref _remaining);
            return done;
        }

        protected override void Forget() => _remaining = default;
    }
}
