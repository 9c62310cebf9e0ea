using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Hosting;

/// <summary>One compacting collection after each burst of closed client connections, never during one.</summary>
public sealed class HeapCompactorTests : IDisposable
{
    // xUnit makes a new instance for each test: a fresh fake clock and compactor every time.
    private readonly FakeTimeProvider _time = new();
    private readonly HeapCompactor _compactor;
    private int _compactions;
    private Action? _whileCompacting;

    public HeapCompactorTests() => _compactor = new HeapCompactor(_time, () =>
    {
        _compactions++;
        _whileCompacting?.Invoke();
    });

    public void Dispose() => _compactor.Dispose();

    /// <summary>Connections that open and close (each closure is a burst's member).</summary>
    private void Close(int connections)
    {
        for (var i = 0; i < connections; i++)
        {
            _compactor.OnConnectionOpened();
            _compactor.OnConnectionClosed();
        }
    }

    private void Open(int connections)
    {
        for (var i = 0; i < connections; i++)
        {
            _compactor.OnConnectionOpened();
        }
    }

    /// <summary>Nothing happens while the clock runs for <paramref name="idle"/>; one more closure then does it.</summary>
    private void AssertOneMoreClosureCompactsAfter(TimeSpan idle)
    {
        _time.Advance(idle);
        Assert.Equal(0, _compactions);

        Close(1);
        _time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, _compactions);
    }

    [Fact]
    public void A_burst_of_closures_is_compacted_once_a_quiet_second_after_it()
    {
        Close(HeapCompactor.ClosedConnectionsWorthCompacting);
        _time.Advance(HeapCompactor.Quiet - TimeSpan.FromMilliseconds(1));
        Assert.Equal(0, _compactions);
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, _compactions);
        Assert.Equal(1, _compactor.Compactions);

        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(1, _compactions);
    }

    [Fact]
    public void Fewer_closures_than_worth_a_pause_never_compact()
    {
        Close(HeapCompactor.ClosedConnectionsWorthCompacting - 1);
        AssertOneMoreClosureCompactsAfter(TimeSpan.FromMinutes(5)); // the count carries over until it is worth it
    }

    [Fact]
    public void Closures_fewer_than_the_connections_still_open_wait_until_they_are_as_many()
    {
        Open(100);

        Close(99);
        AssertOneMoreClosureCompactsAfter(TimeSpan.FromMinutes(1));
    }

    [Fact]
    public void Connections_opened_during_the_quiet_second_put_the_compaction_off()
    {
        Close(HeapCompactor.ClosedConnectionsWorthCompacting);
        Open(HeapCompactor.ClosedConnectionsWorthCompacting + 1);
        AssertOneMoreClosureCompactsAfter(TimeSpan.FromMinutes(1));
    }

    [Fact]
    public void Closures_that_keep_coming_postpone_the_compaction_until_they_stop()
    {
        Close(HeapCompactor.ClosedConnectionsWorthCompacting);
        for (var i = 0; i < 10; i++)
        {
            _time.Advance(HeapCompactor.Quiet / 2);
            Close(1);
        }

        Assert.Equal(0, _compactions);
        _time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, _compactions);
    }

    [Fact]
    public void Bursts_closer_together_than_the_minimum_interval_are_compacted_once_it_has_passed()
    {
        Close(HeapCompactor.ClosedConnectionsWorthCompacting);
        _time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, _compactions);

        Close(HeapCompactor.ClosedConnectionsWorthCompacting);
        _time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, _compactions);
        _time.Advance(HeapCompactor.MinInterval - HeapCompactor.Quiet - TimeSpan.FromMilliseconds(1)); // the first ran at Quiet
        Assert.Equal(1, _compactions);
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(2, _compactions);
    }

    [Fact]
    public void Connections_that_close_while_a_compaction_runs_count_toward_the_next()
    {
        _whileCompacting = () =>
        {
            _whileCompacting = null;
            Close(HeapCompactor.ClosedConnectionsWorthCompacting);
        };

        Close(HeapCompactor.ClosedConnectionsWorthCompacting);
        _time.Advance(HeapCompactor.Quiet);
        Assert.Equal(1, _compactions);
        _time.Advance(HeapCompactor.MinInterval);
        Assert.Equal(2, _compactions);
    }

    [Fact]
    public async Task Client_connections_closed_on_the_proxy_listener_are_counted()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var compactions = 0;
        using var compactor = new HeapCompactor(TimeProvider.System, () => Interlocked.Increment(ref compactions));
        await using var sidekick = await SidekickHarness.StartAsync(SidekickHarness.FastOptions,
            SidekickHarness.Definitions(SidekickHarness.FastOptions, [[backend]]), new SidekickSeams { Compactor = compactor });
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
