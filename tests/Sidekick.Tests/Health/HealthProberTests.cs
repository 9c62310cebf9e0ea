using Sidekick.Forwarding;
using Sidekick.Health;
using Sidekick.Tests.Integration;
using Sidekick.Topology;

namespace Sidekick.Tests.Health;

public sealed class HealthProberTests
{
    [Fact]
    public async Task Probing_does_not_run_on_the_starting_threads_synchronization_context()
    {
        // A host may start sidekick on a context with few threads (the test runner, an embedding app); a
        // probe continuation queued there can outlive the probe's timeout. Here the context never runs anything.
        await using var a = await TestBackend.StartAsync("a");
        var options = SidekickHarness.FastOptions;
        var topology = new TopologyStore();
        topology.Publish(new TopologyBuilder(new BackendTransportFactory(), TimeProvider.System)
            .Build(SidekickHarness.Definitions(options, [[a]]), topology.Current));
        using var prober = new HealthProber(
            new HealthProberOptions(options.HealthDuration, options.HealthTimeout, Optimistic: false, CountProbesInStats: true),
            topology, TimeProvider.System, new Random(1));

        var previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(new NeverRunsContext());
        try
        {
            prober.Start();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        var backend = topology.Current.AllBackends.Single();
        for (var deadline = Environment.TickCount64 + 10000; !backend.IsUp; await Task.Delay(25))
        {
            Assert.True(Environment.TickCount64 < deadline, "the backend was never probed up");
        }
    }

    private sealed class NeverRunsContext : SynchronizationContext
    {
        public override void Post(SendOrPostCallback d, object? state)
        {
        }

        public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException();
    }

    [Fact]
    public async Task Probes_come_every_interval_plus_jitter_below_one_interval()
    {
        await using var a = await TestBackend.StartAsync("a");
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMilliseconds(300) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        await sidekick.WaitUntilAsync(() => a.Seen.Count(r => r.RawTarget == "/health") >= 6, 20000);

        var probes = sidekick.BackendOf(a);
        Assert.True(probes.IsUp);
        // Six probes need at least 1 + 4 intervals after the immediate one and at most 1 + 2*4.
        var last = probes.GetHealthSnapshot().LastProbe!;
        Assert.True(last.Healthy);
    }

    [Fact]
    public async Task Probe_schedule_respects_bounds()
    {
        await using var a = await TestBackend.StartAsync("a");
        var interval = TimeSpan.FromMilliseconds(250);
        var options = SidekickHarness.FastOptions with { HealthDuration = interval };
        var stamps = new System.Collections.Concurrent.ConcurrentQueue<DateTimeOffset>();
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        sidekick.Server.Prober.ProbeCompleted += (_, result) => stamps.Enqueue(result.At);
        await sidekick.WaitUntilAsync(() => stamps.Count >= 6, 20000);

        var times = stamps.ToArray();
        for (var i = 1; i < times.Length; i++)
        {
            var gap = times[i] - times[i - 1];
            // Lower bound is exact (minus timer slack); the upper bound is 2x plus generous scheduling slack.
            Assert.InRange(gap.TotalMilliseconds, interval.TotalMilliseconds - 30, 2 * interval.TotalMilliseconds + 1000);
        }
    }

    [Fact]
    public async Task Non_200_status_is_down_and_only_a_good_probe_brings_it_back()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        var backend = sidekick.BackendOf(a);
        a.Healthy = false;
        await sidekick.WaitUntilAsync(() => !backend.IsUp);
        Assert.Equal("response status 503", backend.GetHealthSnapshot().LastDownReason);
        a.Healthy = true;
        await sidekick.WaitUntilAsync(() => backend.IsUp);
        Assert.True(backend.GetHealthSnapshot().TotalDowntime > TimeSpan.Zero);
    }

    [Fact]
    public async Task Optimistic_mode_stops_probing_healthy_backends_and_resumes_after_a_passive_failure()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        var options = SidekickHarness.FastOptions with { HealthOptimistic = true, HealthDuration = TimeSpan.FromMilliseconds(100) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a, b]);
        await Task.Delay(600);
        var probesBefore = a.Seen.Count(r => r.RawTarget == "/health");
        Assert.Equal(1, probesBefore);

        await a.StopAsync();
        while (sidekick.BackendOf(a).IsUp)
        {
            await sidekick.Client.GetAsync("/x"); // passive detection of the refused connection
        }

        await a.RestartAsync();
        await sidekick.WaitUntilAsync(() => sidekick.BackendOf(a).IsUp);
        Assert.Contains(a.Seen, r => r.RawTarget == "/health");
    }

    [Fact]
    public async Task Probe_timeout_marks_down()
    {
        await using var a = await TestBackend.StartAsync("a");
        a.Healthy = false; // tells the harness not to wait for this backend to come up
        var options = SidekickHarness.FastOptions with { HealthPath = "/slow?ms=2000", ReadHealthPath = "/slow?ms=2000", HealthTimeout = TimeSpan.FromMilliseconds(200) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        var backend = sidekick.BackendOf(a);
        await sidekick.WaitUntilAsync(() => backend.GetHealthSnapshot().LastProbe is not null);
        Assert.False(backend.IsUp);
        Assert.Contains("timed out", backend.GetHealthSnapshot().LastDownReason, StringComparison.Ordinal);
    }
}
