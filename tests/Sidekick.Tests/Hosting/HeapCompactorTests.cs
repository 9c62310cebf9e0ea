using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Hosting;

/// <summary>One compacting collection after each burst of closed client connections, never during one.</summary>
public sealed class HeapCompactorTests
{
    private sealed class Recorder
    {
        public int Compactions { get; private set; }

        public void Compact() => Compactions++;
    }

    /// <summary>Connections that open and close (each closure is a burst's member).</summary>
    private static void Close(HeapCompactor compactor, int connections)
    {
        for (var i = 0; i < connections; i++)
        {
            compactor.OnConnectionOpened();
            compactor.OnConnectionClosed();
        }
    }

    private static void Open(HeapCompactor compactor, int connections)
    {
        for (var i = 0; i < connections; i++)
        {
            compactor.OnConnectionOpened();
        }
    }

    [Fact]
    public void A_burst_of_closures_is_compacted_once_a_quiet_second_after_it()
    {
        var time = new FakeTimeProvider();
        var recorder = new Recorder();
        using var compactor = new HeapCompactor(time, recorder.Compact);

        Close(compactor, HeapCompactor.ClosedConnectionsWorthCompacting);
        time.Advance(HeapCompactor.Quiet - TimeSpan.FromMilliseconds(1));
        Assert.Equal(0, recorder.Compactions);
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, recorder.Compactions);
        Assert.Equal(1, compactor.Compactions);

        time.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(1, recorder.Compactions);
    }

    [Fact]
    public void Fewer_closures_than_worth_a_pause_never_compact()
    {
        var time = new FakeTimeProvider();
        var recorder = new Recorder();
        using var compactor = new HeapCompactor(time, recorder.Compact);

        Close(compactor, HeapCompactor.ClosedConnectionsWorthCompacting - 1);
        time.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(0, recorder.Compactions);

        Close(compactor, 1); // the count carries over until it is worth it
        time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, recorder.Compactions);
    }

    [Fact]
    public void Closures_fewer_than_the_connections_still_open_wait_until_they_are_as_many()
    {
        var time = new FakeTimeProvider();
        var recorder = new Recorder();
        using var compactor = new HeapCompactor(time, recorder.Compact);
        Open(compactor, 100);

        Close(compactor, 99);
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(0, recorder.Compactions);

        Close(compactor, 1);
        time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, recorder.Compactions);
    }

    [Fact]
    public void Connections_opened_during_the_quiet_second_put_the_compaction_off()
    {
        var time = new FakeTimeProvider();
        var recorder = new Recorder();
        using var compactor = new HeapCompactor(time, recorder.Compact);

        Close(compactor, HeapCompactor.ClosedConnectionsWorthCompacting);
        Open(compactor, HeapCompactor.ClosedConnectionsWorthCompacting + 1);
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(0, recorder.Compactions);

        Close(compactor, 1);
        time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, recorder.Compactions);
    }

    [Fact]
    public void Closures_that_keep_coming_postpone_the_compaction_until_they_stop()
    {
        var time = new FakeTimeProvider();
        var recorder = new Recorder();
        using var compactor = new HeapCompactor(time, recorder.Compact);

        Close(compactor, HeapCompactor.ClosedConnectionsWorthCompacting);
        for (var i = 0; i < 10; i++)
        {
            time.Advance(HeapCompactor.Quiet / 2);
            Close(compactor, 1);
        }

        Assert.Equal(0, recorder.Compactions);
        time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, recorder.Compactions);
    }

    [Fact]
    public void Bursts_closer_together_than_the_minimum_interval_are_compacted_once_it_has_passed()
    {
        var time = new FakeTimeProvider();
        var recorder = new Recorder();
        using var compactor = new HeapCompactor(time, recorder.Compact);

        Close(compactor, HeapCompactor.ClosedConnectionsWorthCompacting);
        time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, recorder.Compactions);

        Close(compactor, HeapCompactor.ClosedConnectionsWorthCompacting);
        time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, recorder.Compactions);
        time.Advance(HeapCompactor.MinInterval - HeapCompactor.Quiet - TimeSpan.FromMilliseconds(1)); // the first ran at Quiet
        Assert.Equal(1, recorder.Compactions);
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(2, recorder.Compactions);
    }

    [Fact]
    public void Connections_that_close_while_a_compaction_runs_count_toward_the_next()
    {
        var time = new FakeTimeProvider();
        HeapCompactor? compactor = null;
        var compactions = 0;
        compactor = new HeapCompactor(time, () =>
        {
            compactions++;
            if (compactions == 1)
            {
                Close(compactor!, HeapCompactor.ClosedConnectionsWorthCompacting);
            }
        });
        using (compactor)
        {
            Close(compactor, HeapCompactor.ClosedConnectionsWorthCompacting);
            time.Advance(HeapCompactor.Quiet);
            Assert.Equal(1, compactions);
            time.Advance(HeapCompactor.MinInterval);
            Assert.Equal(2, compactions);
        }
    }

    [Fact]
    public async Task Client_connections_closed_on_the_proxy_listener_are_counted()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var compactions = 0;
        using var compactor = new HeapCompactor(TimeProvider.System, () => Interlocked.Increment(ref compactions));
        await using var sidekick = await SidekickHarness.StartAsync(SidekickHarness.FastOptions,
            SidekickHarness.Definitions(SidekickHarness.FastOptions, [[backend]]), new SidekickServerHooks { Compactor = compactor });
        var endpoint = new IPEndPoint(IPAddress.Loopback, sidekick.BaseAddress.Port);

        for (var i = 0; i < HeapCompactor.ClosedConnectionsWorthCompacting; i++)
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(endpoint);
            var stream = tcp.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes("GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
            var response = await new StreamReader(stream, Encoding.ASCII).ReadToEndAsync();
            Assert.StartsWith("HTTP/1.1 200", response, StringComparison.Ordinal);
        }

        // Kestrel finishes with a connection after the client has read its response: wait for the last ones.
        await sidekick.WaitUntilAsync(() => Volatile.Read(ref compactions) == 1, timeoutMs: 10_000);
        Assert.Same(compactor, sidekick.Server.Compactor);
    }
}
