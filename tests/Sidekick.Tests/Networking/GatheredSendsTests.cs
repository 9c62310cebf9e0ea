using System.Net;
using System.Net.Sockets;
using Sidekick.Networking;

namespace Sidekick.Tests.Networking;

/// <summary>
/// When a client connection's send loop runs after a flush: inline until gathering starts, then off the loop thread
/// only once the flushing work item is done, and always inline on the connection's own loop thread.
/// </summary>
public sealed class GatheredSendsTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [ThreadStatic]
    private static bool t_insideSchedule;

    [Fact]
    public async Task Before_gathering_starts_the_send_loop_runs_inside_the_flush()
    {
        var scheduler = new GatheredSends(EventLoops.Shared.Pick());
        Assert.True(await RanInsideScheduleAsync(scheduler));
    }

    [Fact]
    public async Task Once_gathering_a_flush_made_on_the_thread_pool_is_sent_after_the_work_item_that_made_it()
    {
        var scheduler = new GatheredSends(EventLoops.Shared.Pick());
        scheduler.Start();
        Assert.False(await RanInsideScheduleAsync(scheduler));
    }

    [Fact]
    public async Task Once_gathering_a_flush_made_on_the_connections_own_loop_thread_is_sent_inside_it()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var loop = EventLoops.Shared.Pick();
        using var socket = await LoopSocket.ConnectAsync((IPEndPoint)listener.LocalEndPoint!, loop, CancellationToken.None);
        using var peer = await listener.AcceptAsync();
        var scheduler = new GatheredSends(loop);
        scheduler.Start();

        // The receive completes on the loop's thread when the peer's byte arrives; the check runs there.
        var onLoop = CheckOnLoopAsync(socket, scheduler);
        await peer.SendAsync(new byte[] { 1 });
        var (wasLoopThread, inside) = await onLoop.WaitAsync(Patience);
        Assert.True(wasLoopThread);
        Assert.True(inside);
    }

    private static async Task<(bool OnLoop, bool Inside)> CheckOnLoopAsync(LoopSocket socket, GatheredSends scheduler)
    {
        await socket.ReceiveAsync(new byte[1]).ConfigureAwait(false);
        var onLoop = EventLoop.Current == socket.Loop;
        var ran = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        t_insideSchedule = true;
        scheduler.Schedule(static state => ((TaskCompletionSource<bool>)state!).SetResult(t_insideSchedule), ran);
        t_insideSchedule = false;
        return (onLoop, await ran.Task);
    }

    /// <summary>Schedules from a thread-pool work item; whether the action ran within the Schedule call on that thread.</summary>
    private static async Task<bool> RanInsideScheduleAsync(GatheredSends scheduler)
    {
        var ran = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        ThreadPool.UnsafeQueueUserWorkItem(_ =>
        {
            t_insideSchedule = true;
            scheduler.Schedule(static state => ((TaskCompletionSource<bool>)state!).SetResult(t_insideSchedule), ran);
            t_insideSchedule = false;
        }, null);
        return await ran.Task.WaitAsync(Patience);
    }
}
