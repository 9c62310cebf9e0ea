using System.Collections.Concurrent;
using Sidekick.Forwarding;
using Sidekick.Health;
using Sidekick.Tests.Integration;
using Sidekick.Topology;

namespace Sidekick.Tests.Health;

/// <summary>The down-backend schedule on a clock the test moves: no real waiting decides anything.</summary>
public sealed class FastReprobeTests
{
    [Fact]
    public void A_down_backend_waits_100_ms_then_twice_as_long_each_time_up_to_the_interval()
    {
        using var prober = new HealthProber(
            new HealthProberOptions(TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(10), Optimistic: false),
            new TopologyStore(), TimeProvider.System, new Random(1));
        var delays = Enumerable.Range(1, 6).Select(n => prober.NextDelay(first: false, n).TotalMilliseconds).ToArray();
        Assert.Equal([100, 200, 400, 800, 1600, 3200], delays);
        // 6.4 s would pass the interval: upstream's interval plus jitter from there on, and for an up backend.
        Assert.InRange(prober.NextDelay(first: false, 7), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(10));
        Assert.Equal(TimeSpan.FromSeconds(5), prober.NextDelay(first: true, 0));
        Assert.InRange(prober.NextDelay(first: false, 0), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_backend_that_comes_up_is_found_at_the_next_fast_probe_on_a_fake_clock()
    {
        await using var a = await TestBackend.StartAsync("a");
        a.Healthy = false;
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        var topology = new TopologyStore();
        topology.Publish(new TopologyBuilder(new BackendTransportFactory(), time)
            .Build(SidekickHarness.Definitions(SidekickHarness.FastOptions, [[a]]), topology.Current));
        using var prober = new HealthProber(
            new HealthProberOptions(TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(10), Optimistic: false),
            topology, time, new Random(1));
        var probes = new ConcurrentQueue<ProbeResult>();
        prober.ProbeCompleted += (_, result) => probes.Enqueue(result);
        prober.Start();
        await Eventually.WaitUntilAsync(() => probes.Count == 1);

        // Move the clock in 10 ms steps until each next probe ran; four probes find it down, then it is up.
        for (var n = 2; n <= 5; n++)
        {
            if (n == 5)
            {
                a.Healthy = true;
            }

            await Eventually.WaitUntilAsync(() =>
            {
                if (probes.Count < n)
                {
                    time.Advance(TimeSpan.FromMilliseconds(10));
                }

                return probes.Count >= n;
            });
        }

        // From the end of one probe to the start of the next: 100, 200, 400, 800 ms of the test's clock (the
        // clock also moves while a probe is in flight, which is why each probe's own duration is left out).
        var results = probes.ToArray();
        var gaps = results.Zip(results.Skip(1), (x, y) => (y.At - (x.At + x.Latency)).TotalMilliseconds).ToArray();
        Assert.Equal(4, gaps.Length);
        foreach (var (gap, expected) in gaps.Zip([100.0, 200, 400, 800]))
        {
            Assert.InRange(gap, expected, expected + 50);
        }

        Assert.True(topology.Current.AllBackends.Single().IsUp);
    }
}
