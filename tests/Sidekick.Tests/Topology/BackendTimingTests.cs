using Microsoft.Extensions.Time.Testing;
using Sidekick.Routing;
using Sidekick.Topology;

namespace Sidekick.Tests.Topology;

/// <summary>Ejection, slow start, failback hold-down and the panic rule's eligibility, on a clock the test moves.</summary>
public sealed class BackendTimingTests
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.UtcNow);

    private Backend NewBackend(int port, int site = 1) =>
        new(new BackendDefinition(new Uri($"http://127.0.0.1:{port}"), $"http://127.0.0.1:{port}", new Uri($"http://127.0.0.1:{port}/health")), site, _time);

    private static ProbeResult Probe(bool healthy) => new(DateTimeOffset.UtcNow, healthy, healthy ? 200 : 503, TimeSpan.Zero, healthy ? null : "response status 503");

    private Backend Healthy(int port, int site = 1)
    {
        var backend = NewBackend(port, site);
        backend.RecordProbe(Probe(true));
        backend.MarkUp();
        return backend;
    }

    [Fact]
    public void An_ejection_lasts_its_time_and_grows_with_each_ejection()
    {
        var backend = Healthy(1);
        Assert.Equal(TimeSpan.FromSeconds(30), backend.Eject(TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(5)));
        Assert.False(backend.IsServing);
        _time.Advance(TimeSpan.FromSeconds(29));
        Assert.True(backend.IsEjected);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(backend.IsServing);

        Assert.Equal(TimeSpan.FromSeconds(60), backend.Eject(TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(5)));
        _time.Advance(TimeSpan.FromSeconds(59));
        Assert.False(backend.IsServing);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(backend.IsServing);
    }

    [Fact]
    public void The_back_off_shrinks_by_a_step_for_each_base_time_served_since_the_last_ejection()
    {
        var (step, most) = (TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(5));
        var backend = Healthy(1);
        for (var i = 1; i <= 12; i++)
        {
            var duration = backend.Eject(step, most);
            _time.Advance(duration);
        }

        // Twelve ejections back to back: the longest back-off. An hour of serving since brings it back to the first step.
        Assert.Equal(most, backend.Eject(step, most));
        _time.Advance(most + TimeSpan.FromHours(1));
        Assert.Equal(step, backend.Eject(step, most));

        // Three steps' worth of serving after a one-step back-off: below the first step is still the first step.
        _time.Advance(step + TimeSpan.FromSeconds(95));
        Assert.Equal(step, backend.Eject(step, most));
        // Straight after the last one ended: the next step.
        _time.Advance(step);
        Assert.Equal(2 * step, backend.Eject(step, most));
        // One step of serving after it ended: the same step again (one up, one down).
        _time.Advance(2 * step + step);
        Assert.Equal(2 * step, backend.Eject(step, most));
    }

    [Fact]
    public void A_recovered_backend_warms_up_over_the_slow_start_but_the_first_up_does_not()
    {
        var backend = Healthy(1);
        Assert.Equal(1, backend.WarmupFactor(10_000));
        backend.MarkDown("test");
        backend.MarkUp();
        Assert.Equal(0.05, backend.WarmupFactor(10_000));
        _time.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(0.5, backend.WarmupFactor(10_000), 3);
        _time.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(1, backend.WarmupFactor(10_000));
    }

    [Fact]
    public void Failback_waits_for_the_hold_down()
    {
        var a = Healthy(1, site: 1);
        var b = Healthy(2, site: 2);
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler());
        var topology = new TopologySnapshot([new Site(1, [a], invoker), new Site(2, [b], invoker)]);
        var hold = 2000L;
        Assert.Equal(1, topology.SelectSite(hold)!.Number);

        a.MarkDown("test");
        Assert.Equal(2, topology.SelectSite(hold)!.Number);
        a.MarkUp();
        Assert.Equal(2, topology.SelectSite(hold)!.Number);
        _time.Advance(TimeSpan.FromMilliseconds(1999));
        Assert.Equal(2, topology.SelectSite(hold)!.Number);
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, topology.SelectSite(hold)!.Number);
    }

    [Fact]
    public void Only_a_backend_taken_out_by_the_request_path_while_its_probe_passes_is_used_in_panic()
    {
        var never = NewBackend(1);
        Assert.False(never.IsPassivelyOut); // never probed

        var passive = Healthy(2);
        passive.MarkDown("connection reset");
        Assert.True(passive.IsPassivelyOut);
        passive.RecordProbe(Probe(false));
        Assert.False(passive.IsPassivelyOut); // the probe agrees: down

        var ejected = Healthy(3);
        ejected.Eject(TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(5));
        Assert.True(ejected.IsPassivelyOut);
        _time.Advance(TimeSpan.FromSeconds(30));
        Assert.False(ejected.IsPassivelyOut);

        var panic = new PanicRule();
        var changes = new List<int>();
        panic.Changed += changes.Add;
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler());
        var nothing = new TopologySnapshot([new Site(1, [never, passive], invoker)]);
        Assert.Null(panic.Claim(nothing));

        var reset = Healthy(4);
        reset.MarkDown("connection reset");
        var topology = new TopologySnapshot([new Site(1, [never, reset], invoker)]);
        Assert.Null(topology.SelectSite(0));
        var claimed = panic.Claim(topology);
        Assert.Same(reset, claimed!.Value.Backend);
        Assert.Equal(1, reset.InFlight);
        panic.Serving();
        Assert.Equal([1, 0], changes);
    }

    [Fact]
    public void Broken_responses_count_once_per_request_and_a_complete_one_ends_the_run()
    {
        var backend = Healthy(1);
        Assert.Equal(1, backend.RecordBrokenResponse("r1"));
        Assert.Equal(1, backend.RecordBrokenResponse("r1")); // the same request retried on the same backend
        Assert.Equal(2, backend.RecordBrokenResponse("r2"));
        backend.RecordCompleteResponse();
        Assert.Equal(1, backend.RecordBrokenResponse("r3"));
    }

    [Fact]
    public void A_backend_a_probe_brings_back_starts_a_new_run_of_broken_responses()
    {
        // Marked down by a run of them, brought back by a good probe: one more broken response took it down again.
        var backend = Healthy(1);
        for (var i = 0; i < 5; i++)
        {
            backend.RecordBrokenResponse($"r{i}");
        }

        backend.MarkDown("5 broken responses in a row");
        backend.MarkUp();
        Assert.Equal(1, backend.RecordBrokenResponse("r5"));
    }
}
