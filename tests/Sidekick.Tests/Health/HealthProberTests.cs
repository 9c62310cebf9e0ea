using System.Collections.Concurrent;
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
            new HealthProberOptions(options.HealthDuration, options.HealthTimeout, Optimistic: false),
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

    [Fact]
    public async Task Probes_send_the_endpoints_user_information_as_basic_credentials_and_only_there()
    {
        // As Go's client for a URL with a user: "Authorization: Basic base64(user:password)", decoded.
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        var sites = SiteParser.Parse(
            [$"http://us%40er:p%3Ass@127.0.0.1:{backend.Url.Port}", $"http://127.0.0.1:{backend.Url.Port}"], "sidekick", "/health/a", "/health/b", 0);
        var topology = new TopologyStore();
        topology.Publish(new TopologyBuilder(new BackendTransportFactory(), TimeProvider.System).Build(sites, topology.Current));
        using var prober = new HealthProber(new HealthProberOptions(TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(10), Optimistic: false),
            topology, TimeProvider.System, new Random(1));
        prober.Start();
        for (var deadline = Environment.TickCount64 + 10000; !topology.Current.AllBackends.All(b => b.IsUp); await Task.Delay(25))
        {
            Assert.True(Environment.TickCount64 < deadline, "the backends were never probed up");
        }

        var heads = backend.ProbeHeads.ToArray();
        var withCredentials = Assert.Single(heads, h => h.StartsWith("GET /health/a ", StringComparison.Ordinal));
        Assert.Contains("\r\nAuthorization: Basic dXNAZXI6cDpzcw==\r\n", withCredentials, StringComparison.Ordinal);
        var without = Assert.Single(heads, h => h.StartsWith("GET /health/b ", StringComparison.Ordinal));
        Assert.DoesNotContain("Authorization", without, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Probes_follow_redirects_as_gos_client_does_with_credentials_only_for_the_endpoint_itself()
    {
        // Upstream's probe is Go's client: it sends up to 10 requests (9 redirects followed), and a redirect to a 200 is a
        // healthy backend. A Location that cannot be combined with the target fails the probe, and the probe goes on.
        await using var elsewhere = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        await using var backend = new RawBackend(request => RawResponse.Text(request.Target switch
        {
            "/ready" => "HTTP/1.1 302 Found\r\nLocation: /ready/final\r\nContent-Length: 5\r\n\r\nmoved",
            "/ready/final" => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "/away" => $"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere.Url.Port}/there\r\nContent-Length: 0\r\n\r\n",
            "/loop" => "HTTP/1.1 301 Moved Permanently\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n",
            "/gone" => "HTTP/1.1 308 Permanent Redirect\r\nLocation: /missing\r\nContent-Length: 0\r\n\r\n",
            "/ftp" => "HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x\r\nContent-Length: 0\r\n\r\n",
            "/no-location" => "HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n",
            "/bad-location" => "HTTP/1.1 302 Found\r\nLocation: //\r\nContent-Length: 0\r\n\r\n",
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        }));
        var endpoint = $"http://us:pw@127.0.0.1:{backend.Url.Port}";
        string[] paths = ["/ready", "/away", "/loop", "/gone", "/ftp", "/no-location", "/bad-location"];
        var sites = paths.Select((path, i) => new SiteDefinition(i + 1, [SiteParser.Parse([endpoint], "sidekick", path, path, 0)[0].Backends[0]])).ToArray();
        var topology = new TopologyStore();
        topology.Publish(new TopologyBuilder(new BackendTransportFactory(), TimeProvider.System).Build(sites, topology.Current));
        using var prober = new HealthProber(new HealthProberOptions(TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(10), Optimistic: false),
            topology, TimeProvider.System, new Random(1));
        prober.Start();
        var backends = topology.Current.Sites.Select(s => s.Backends.Single()).ToArray();
        for (var deadline = Environment.TickCount64 + 10000; backends.Any(b => b.GetHealthSnapshot().LastProbe is null); await Task.Delay(25))
        {
            Assert.True(Environment.TickCount64 < deadline, "not every backend was probed");
        }

        string Outcome(int site) => backends[site].GetHealthSnapshot().LastProbe is { } probe ? probe.Healthy ? "up" : probe.Error! : "none";
        Assert.Equal("up", Outcome(0));
        Assert.Equal("up", Outcome(1));
        Assert.EndsWith($"stopped after {HealthProber.MaxRedirects} redirects", Outcome(2), StringComparison.Ordinal);
        Assert.Equal("response status 404", Outcome(3));
        Assert.Contains("redirected to ftp: URL", Outcome(4), StringComparison.Ordinal);
        Assert.Equal("response status 302", Outcome(5));
        Assert.Contains("redirected to an invalid Location (//)", Outcome(6), StringComparison.Ordinal);
        // The loop was asked 10 times, as Go's client asks it: the probe and 9 redirects.
        Assert.Equal(HealthProber.MaxRedirects, backend.Requests.Count(r => r.Target == "/loop"));
        // The credentials went with every request to the endpoint, never to the other host.
        const string Basic = "\r\nAuthorization: Basic dXM6cHc=\r\n";
        Assert.All(backend.Requests, r => Assert.Contains(Basic, r.Head, StringComparison.Ordinal));
        var there = Assert.Single(elsewhere.Requests);
        Assert.Equal("/there", there.Target);
        Assert.DoesNotContain("Authorization", there.Head, StringComparison.OrdinalIgnoreCase);
    }

    private sealed class NeverRunsContext : SynchronizationContext
    {
        public override void Post(SendOrPostCallback d, object? state)
        {
        }

        public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException();
    }

    [Fact]
    public async Task Waits_are_one_interval_then_an_interval_plus_jitter_below_one_interval()
    {
        // The schedule is read from the waits the prober asks its clock for, not from wall-clock gaps: on a
        // loaded two-core CI host a gap stretches by whatever the scheduler adds, and timers stay real.
        await using var a = await TestBackend.StartAsync("a");
        var interval = TimeSpan.FromMilliseconds(100);
        var clock = new RecordingClock();
        var topology = new TopologyStore();
        topology.Publish(new TopologyBuilder(new BackendTransportFactory(), TimeProvider.System)
            .Build(SidekickHarness.Definitions(SidekickHarness.FastOptions, [[a]]), topology.Current));
        using var prober = new HealthProber(
            new HealthProberOptions(interval, TimeSpan.FromSeconds(10), Optimistic: false),
            topology, clock, new Random(1));
        prober.Start();

        for (var deadline = Environment.TickCount64 + 20000; clock.Waits.Count < 8; await Task.Delay(25))
        {
            Assert.True(Environment.TickCount64 < deadline, $"only {clock.Waits.Count} waits were asked for");
        }

        var waits = clock.Waits.ToArray();
        Assert.Equal(interval, waits[0]);
        Assert.All(waits[1..], wait => Assert.InRange(wait, interval, interval * 2 - TimeSpan.FromTicks(1)));
        Assert.True(waits[1..].Distinct().Count() > 1, "the jitter never varied");
        Assert.True(a.Seen.Count(r => r.RawTarget == "/health") >= 8, "a wait did not lead to a probe");
    }

    /// <summary>The system clock, recording the due time of every timer asked for (Task.Delay asks for one).</summary>
    private sealed class RecordingClock : TimeProvider
    {
        public ConcurrentQueue<TimeSpan> Waits { get; } = new();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Waits.Enqueue(dueTime);
            return TimeProvider.System.CreateTimer(callback, state, dueTime, period);
        }
    }

    [Fact]
    public async Task Probes_never_come_sooner_than_the_interval_and_a_healthy_backend_stays_up()
    {
        await using var a = await TestBackend.StartAsync("a");
        var interval = TimeSpan.FromMilliseconds(250);
        // A generous timeout: this test is about a healthy backend, and a loaded host may delay an answer.
        var options = SidekickHarness.FastOptions with { HealthDuration = interval, HealthTimeout = TimeSpan.FromSeconds(10) };
        var stamps = new ConcurrentQueue<DateTimeOffset>();
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        sidekick.Server.Prober.ProbeCompleted += (_, result) => stamps.Enqueue(result.At);
        await sidekick.WaitUntilAsync(() => stamps.Count >= 6, 20000);

        var times = stamps.ToArray();
        for (var i = 1; i < times.Length; i++)
        {
            // Load can only delay a probe; coming sooner than the interval (less timer slack) is a defect.
            Assert.True((times[i] - times[i - 1]).TotalMilliseconds >= interval.TotalMilliseconds - 30,
                $"probe {i} came {(times[i] - times[i - 1]).TotalMilliseconds:0} ms after the one before");
        }

        var backend = sidekick.BackendOf(a);
        Assert.True(backend.IsUp, $"down: {backend.GetHealthSnapshot().LastDownReason}");
        Assert.True(backend.GetHealthSnapshot().LastProbe!.Healthy);
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
