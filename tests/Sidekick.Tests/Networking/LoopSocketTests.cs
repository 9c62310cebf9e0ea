using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Sidekick.Networking;

namespace Sidekick.Tests.Networking;

/// <summary>Sidekick's event-loop sockets against real loopback peers (.NET sockets on the other side).</summary>
public sealed class LoopSocketTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

    public LoopSocketTests()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(16);
    }

    private IPEndPoint Endpoint => (IPEndPoint)_listener.LocalEndPoint!;

    public void Dispose() => _listener.Dispose();

    [Fact]
    public async Task Many_megabytes_cross_both_ways_through_full_socket_buffers()
    {
        using var socket = await LoopSocket.ConnectAsync(Endpoint, EventLoops.Shared.Pick(), CancellationToken.None);
        using var peer = await _listener.AcceptAsync();
        var outbound = RandomNumberGenerator.GetBytes(24 * 1024 * 1024);
        var inbound = RandomNumberGenerator.GetBytes(8 * 1024 * 1024);

        // Three segments sent as one sequence, while the peer only starts reading later: the send must
        // wait for room (EAGAIN, then the writable edge) more than once.
        var sending = socket.SendAsync(Segments(outbound, 3)).AsTask();
        await Task.Delay(200);
        Assert.False(sending.IsCompleted);
        var received = await ReadExactlyAsync(peer, outbound.Length).WaitAsync(Patience);
        await sending.WaitAsync(Patience);
        Assert.Equal(SHA256.HashData(outbound), SHA256.HashData(received));

        var peerSending = peer.SendAsync(inbound);
        var back = new byte[inbound.Length];
        var total = 0;
        while (total < back.Length)
        {
            var count = await socket.ReceiveAsync(back.AsMemory(total, Math.Min(64 * 1024, back.Length - total))).AsTask().WaitAsync(Patience);
            Assert.NotEqual(0, count);
            total += count;
        }

        await peerSending;
        Assert.Equal(SHA256.HashData(inbound), SHA256.HashData(back));
    }

    [Fact]
    public async Task A_send_made_while_the_loop_runs_a_batch_of_events_leaves_when_the_batch_is_done()
    {
        var loop = EventLoops.Shared.Pick();
        using var trigger = await LoopSocket.ConnectAsync(Endpoint, loop, CancellationToken.None);
        using var triggerPeer = await _listener.AcceptAsync();
        using var socket = await LoopSocket.ConnectAsync(Endpoint, loop, CancellationToken.None);
        using var peer = await _listener.AcceptAsync();

        // From any other thread a send goes out at once.
        Assert.True(await Task.Run(() => socket.SendAsync("now"u8.ToArray()).AsTask().IsCompletedSuccessfully));
        Assert.Equal("now"u8.ToArray(), await ReadExactlyAsync(peer, 3).WaitAsync(Patience));

        // From a continuation the loop runs for a readiness event, it waits for the end of that batch.
        var seen = await InBatchAsync(trigger, triggerPeer, () =>
        {
            var sending = socket.SendAsync("later"u8.ToArray()).AsTask();
            return (OnLoop: EventLoop.Current == loop, Immediate: sending.IsCompleted, AtPeer: peer.Available, Sent: sending);
        });

        Assert.True(seen.OnLoop);
        Assert.False(seen.Immediate);
        Assert.Equal(0, seen.AtPeer);
        await seen.Sent.WaitAsync(Patience);
        Assert.Equal("later"u8.ToArray(), await ReadExactlyAsync(peer, 5).WaitAsync(Patience));

        // Shut down in the same batch (an abort right after a response was written): the send goes out first.
        var last = await InBatchAsync(trigger, triggerPeer, () =>
        {
            var sending = socket.SendAsync("last"u8.ToArray()).AsTask();
            socket.Shutdown();
            return sending;
        });
        await last.WaitAsync(Patience);
        Assert.Equal("last"u8.ToArray(), await ReadExactlyAsync(peer, 4).WaitAsync(Patience));
        Assert.Equal(0, await peer.ReceiveAsync(new byte[1]).WaitAsync(Patience));
    }

    [Fact]
    public async Task A_receive_with_nothing_there_completes_when_the_bytes_arrive()
    {
        using var socket = await LoopSocket.ConnectAsync(Endpoint, EventLoops.Shared.Pick(), CancellationToken.None);
        using var peer = await _listener.AcceptAsync();
        var buffer = new byte[100];

        for (var round = 0; round < 3; round++)
        {
            var receiving = socket.ReceiveAsync(buffer).AsTask();
            await Task.Delay(100);
            Assert.False(receiving.IsCompleted);
            await peer.SendAsync("hello"u8.ToArray());
            Assert.Equal(5, await receiving.WaitAsync(Patience));
            Assert.Equal("hello"u8.ToArray(), buffer[..5]);
        }
    }

    [Fact]
    public async Task Waiting_for_readiness_takes_no_bytes_and_ends_with_data_close_or_dispose()
    {
        using var socket = await LoopSocket.ConnectAsync(Endpoint, EventLoops.Shared.Pick(), CancellationToken.None);
        using var peer = await _listener.AcceptAsync();
        var buffer = new byte[100];

        for (var round = 0; round < 2; round++)
        {
            // Nothing sent yet, or the last bytes were all received: the wait must not end by itself.
            var waiting = socket.WaitReadableAsync().AsTask();
            await Task.Delay(100);
            Assert.False(waiting.IsCompleted);
            await peer.SendAsync("hello"u8.ToArray());
            await waiting.WaitAsync(Patience);
            var stillReadable = socket.WaitReadableAsync().AsTask(); // nothing was taken: ready at once
            Assert.True(stillReadable.IsCompletedSuccessfully);
            Assert.Equal(5, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(Patience));
            Assert.Equal("hello"u8.ToArray(), buffer[..5]);
        }

        var untilClose = socket.WaitReadableAsync().AsTask();
        peer.Shutdown(SocketShutdown.Send);
        await untilClose.WaitAsync(Patience);
        Assert.Equal(0, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(Patience));

        using var other = await LoopSocket.ConnectAsync(Endpoint, EventLoops.Shared.Pick(), CancellationToken.None);
        using var otherPeer = await _listener.AcceptAsync();
        var untilDispose = other.WaitReadableAsync().AsTask();
        other.Dispose();
        var error = await Assert.ThrowsAsync<SocketException>(() => untilDispose.WaitAsync(Patience));
        Assert.Equal(SocketError.OperationAborted, error.SocketErrorCode);
    }

    [Fact]
    public async Task End_of_stream_is_reported_every_time_it_is_asked()
    {
        using var socket = await LoopSocket.ConnectAsync(Endpoint, EventLoops.Shared.Pick(), CancellationToken.None);
        using (var peer = await _listener.AcceptAsync())
        {
            await peer.SendAsync("bye"u8.ToArray());
            peer.Shutdown(SocketShutdown.Send);
        }

        var buffer = new byte[100];
        var total = 0;
        int count;
        while ((count = await socket.ReceiveAsync(buffer.AsMemory(total)).AsTask().WaitAsync(Patience)) > 0)
        {
            total += count;
        }

        Assert.Equal(3, total);
        Assert.Equal(0, await socket.ReceiveAsync(buffer).AsTask().WaitAsync(Patience));
    }

    [Fact]
    public async Task A_reset_from_the_peer_fails_the_receive_as_a_reset()
    {
        using var socket = await LoopSocket.ConnectAsync(Endpoint, EventLoops.Shared.Pick(), CancellationToken.None);
        var peer = await _listener.AcceptAsync();
        var receiving = socket.ReceiveAsync(new byte[10]).AsTask();
        peer.LingerState = new LingerOption(true, 0);
        peer.Dispose();

        var error = await Assert.ThrowsAsync<SocketException>(() => receiving.WaitAsync(Patience));
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
    }

    [Fact]
    public async Task Disposing_fails_a_pending_receive_at_once()
    {
        var socket = await LoopSocket.ConnectAsync(Endpoint, EventLoops.Shared.Pick(), CancellationToken.None);
        using var peer = await _listener.AcceptAsync();
        var receiving = socket.ReceiveAsync(new byte[10]).AsTask();
        await Task.Delay(50);

        socket.Dispose();

        var error = await Assert.ThrowsAsync<SocketException>(() => receiving.WaitAsync(Patience));
        Assert.Equal(SocketError.OperationAborted, error.SocketErrorCode);
        await Assert.ThrowsAsync<SocketException>(async () => await socket.SendAsync(new byte[1]));
    }

    [Fact]
    public async Task A_refused_connect_says_connection_refused()
    {
        var port = Endpoint.Port;
        _listener.Dispose();

        var error = await Assert.ThrowsAsync<SocketException>(async () =>
            await LoopSocket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), EventLoops.Shared.Pick(), CancellationToken.None));
        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
    }

    [Fact]
    public async Task A_connect_that_hangs_ends_when_cancelled()
    {
        // A listener that never accepts, with its queue full: further handshakes get no answer.
        using var full = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        full.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        full.Listen(0);
        var queued = new List<Socket>();
        try
        {
            using var cancel = new CancellationTokenSource();
            Task<LoopSocket>? hanging = null;
            for (var i = 0; i < 8 && hanging is null; i++)
            {
                var attempt = LoopSocket.ConnectAsync((IPEndPoint)full.LocalEndPoint!, EventLoops.Shared.Pick(), cancel.Token).AsTask();
                if (await Task.WhenAny(attempt, Task.Delay(300)) == attempt)
                {
                    queued.Add((await attempt).Socket);
                }
                else
                {
                    hanging = attempt;
                }
            }

            Assert.NotNull(hanging);
            await cancel.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => hanging.WaitAsync(Patience));
        }
        finally
        {
            queued.ForEach(s => s.Dispose());
        }
    }

    private static ReadOnlySequence<byte> Segments(byte[] data, int count)
    {
        var size = data.Length / count;
        var first = new Segment(data.AsMemory(0, size), 0);
        var last = first;
        for (var i = 1; i < count; i++)
        {
            var end = i == count - 1 ? data.Length : (i + 1) * size;
            last = last.Append(data.AsMemory(i * size, end - (i * size)));
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    /// <summary>
    /// Runs <paramref name="inBatch"/> on the loop thread while it handles a batch of events: as the
    /// continuation of a receive on <paramref name="trigger"/>, which <paramref name="triggerPeer"/> completes.
    /// </summary>
    private static async Task<T> InBatchAsync<T>(LoopSocket trigger, Socket triggerPeer, Func<T> inBatch)
    {
        var running = trigger.ReceiveAsync(new byte[16]).AsTask().ContinueWith(
            _ => inBatch(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        await triggerPeer.SendAsync("go"u8.ToArray());
        return await running.WaitAsync(Patience);
    }

    private static async Task<byte[]> ReadExactlyAsync(Socket socket, int length)
    {
        var data = new byte[length];
        var total = 0;
        while (total < length)
        {
            // Small reads: the sender keeps running into a full buffer.
            var count = await socket.ReceiveAsync(data.AsMemory(total, Math.Min(256 * 1024, length - total)));
            Assert.NotEqual(0, count);
            total += count;
        }

        return data;
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
