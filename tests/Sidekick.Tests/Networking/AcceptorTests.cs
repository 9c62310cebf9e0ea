using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Networking;

namespace Sidekick.Tests.Networking;

/// <summary>
/// Accept under a descriptor shortage: the listening socket stays readable while accept fails with EMFILE, so an
/// accept loop that asks again at once spins a core. Each attempt here is counted by a scripted accept, and the clock
/// is a <see cref="FakeTimeProvider"/>: no attempt may come before its wait is over.
/// </summary>
public sealed class AcceptorTests
{
    [Fact]
    public async Task A_shortage_is_retried_after_5_ms_doubling_up_to_1_s_and_counted()
    {
        var time = new FakeTimeProvider();
        var shortage = new LocalShortage(time);
        using var accepted = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var attempts = 0;
        var failures = 10;
        var acceptor = new Acceptor(_ =>
        {
            attempts++;
            return attempts <= failures
                ? ValueTask.FromException<Socket>(new SocketException((int)SocketError.TooManyOpenSockets))
                : ValueTask.FromResult(accepted);
        }, shortage, time);

        var accepting = acceptor.AcceptAsync(CancellationToken.None).AsTask();
        Assert.Equal(1, attempts);
        // The waits: 5, 10, 20, ... 640 ms, then 1 s (never more), each attempt exactly when its wait ends.
        TimeSpan[] waits = [.. Enumerable.Range(0, 8).Select(i => TimeSpan.FromMilliseconds(5 << i)), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1)];
        foreach (var wait in waits)
        {
            var before = attempts;
            time.Advance(wait - TimeSpan.FromMilliseconds(1));
            Assert.Equal(before, attempts);
            time.Advance(TimeSpan.FromMilliseconds(1));
            await Eventually.WaitUntilAsync(() => Volatile.Read(ref attempts) == before + 1);
        }

        Assert.Same(accepted, await accepting);
        Assert.Equal(failures, shortage.Count(ShortageSite.Accept));
    }

    [Fact]
    public async Task A_client_that_reset_in_the_queue_is_skipped_at_once_and_is_no_shortage()
    {
        var time = new FakeTimeProvider();
        var shortage = new LocalShortage(time);
        using var accepted = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var attempts = 0;
        var acceptor = new Acceptor(_ => ++attempts switch
        {
            1 => ValueTask.FromException<Socket>(new SocketException((int)SocketError.ConnectionReset)),
            2 => ValueTask.FromException<Socket>(new SocketException((int)SocketError.ConnectionAborted)),
            _ => ValueTask.FromResult(accepted),
        }, shortage, time);

        Assert.Same(accepted, await acceptor.AcceptAsync(CancellationToken.None));
        Assert.Equal(3, attempts);
        Assert.Equal(0, shortage.Count(ShortageSite.Accept));
    }

    [Fact]
    public async Task Any_other_failure_waits_too_and_stopping_the_listener_ends_the_wait()
    {
        var time = new FakeTimeProvider();
        var attempts = 0;
        var acceptor = new Acceptor(_ =>
        {
            attempts++;
            return ValueTask.FromException<Socket>(new SocketException((int)SocketError.ProtocolNotSupported));
        }, new LocalShortage(time), time);

        var accepting = acceptor.AcceptAsync(CancellationToken.None).AsTask();
        Assert.Equal(1, attempts);
        Assert.False(accepting.IsCompleted);
        acceptor.Stop();
        Assert.Null(await accepting);
        Assert.Equal(1, attempts);
    }

    [Fact]
    public void A_shortage_is_told_to_the_log_once_per_period_per_site_with_the_count_since()
    {
        var time = new FakeTimeProvider();
        var shortage = new LocalShortage(time);
        var lines = new List<(ShortageSite Site, long More)>();
        shortage.Met += (site, _, more) => lines.Add((site, more));

        shortage.Record(ShortageSite.Accept, SocketError.TooManyOpenSockets);
        shortage.Record(ShortageSite.Accept, SocketError.TooManyOpenSockets);
        shortage.Record(ShortageSite.Backend, SocketError.TooManyOpenSockets);
        time.Advance(LocalShortage.LinePeriod - TimeSpan.FromTicks(1));
        shortage.Record(ShortageSite.Accept, SocketError.TooManyOpenSockets);
        time.Advance(TimeSpan.FromTicks(1));
        shortage.Record(ShortageSite.Accept, SocketError.TooManyOpenSockets);

        Assert.Equal([(ShortageSite.Accept, 0L), (ShortageSite.Backend, 0L), (ShortageSite.Accept, 2L)], lines);
        Assert.Equal(4, shortage.Count(ShortageSite.Accept));
        Assert.Equal(1, shortage.Count(ShortageSite.Backend));
    }

    [Fact]
    public async Task A_client_whose_connection_cannot_be_set_up_is_dropped_and_accepting_goes_on()
    {
        // An exception out of a listener's AcceptAsync ends Kestrel's accept loop for good: the port is never served
        // again. Setting a connection up can fail (epoll_ctl ENOMEM near a container's memory limit).
        var time = new FakeTimeProvider();
        var shortage = new LocalShortage(time);
        using var listening = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listening.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var first = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var second = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var accepted = new Queue<Socket>([first, second]);
        await using var listener = new ScriptedListener(listening, new Acceptor(_ => ValueTask.FromResult(accepted.Dequeue()), shortage, time));

        Assert.NotNull(await listener.AcceptAsync());
        Assert.Equal([first, second], listener.Served);
        Assert.True(first.SafeHandle.IsClosed);
        Assert.Equal(1, shortage.Count(ShortageSite.Accept));
    }

    /// <summary>A transport whose first connection cannot be set up for want of kernel memory.</summary>
    private sealed class ScriptedListener(Socket socket, Acceptor acceptor) : AcceptingListener(socket, acceptor)
    {
        public List<Socket> Served { get; } = [];

        protected override ConnectionContext Serve(Socket accepted)
        {
            Served.Add(accepted);
            return Served.Count == 1 ? throw new SocketException((int)SocketError.NoBufferSpaceAvailable) : new DefaultConnectionContext();
        }

        protected override void DisposeTransport()
        {
        }
    }
}
