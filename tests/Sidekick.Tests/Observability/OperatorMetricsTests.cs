using System.Globalization;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Observability;

/// <summary>
/// Metrics an operator alerts on must mean what they say: failovers only for real moves of traffic, probes apart
/// from requests, requests by status class, and the standard process series. Every exposition passes promtool.
/// </summary>
public sealed class OperatorMetricsTests
{
    [Fact]
    public async Task A_clean_start_with_both_sites_healthy_counts_no_failover_even_when_the_second_site_answers_first()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        // Site 1's first probe cannot connect until site 2 has taken the traffic: the order a slow first
        // connection gives at start.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async ValueTask<Stream> Connect(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
        {
            if (context.DnsEndPoint.Port == a.Port)
            {
                await release.Task.WaitAsync(cancellationToken);
            }

            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        }

        var options = SidekickHarness.FastOptions with { HealthTimeout = TimeSpan.FromSeconds(10) };
        var definitions = SidekickHarness.Definitions(options, [[a], [b]]);
        await using var server = SidekickServer.Create(options, () => definitions, parts: new ServerParts { Connect = Connect });
        await server.StartAsync();
        using var client = new HttpClient { BaseAddress = server.BaseAddress };
        await WaitUntilAsync(() => server.Sites.ActiveSiteNumber == 2, "site 2 to take the traffic while site 1's first probe waits");
        release.SetResult();
        await WaitUntilAsync(() => server.Sites.ActiveSiteNumber == 1, "site 1's first probe");

        var text = await client.GetStringAsync("/.prometheus/metrics");
        Assert.Equal(0, Value(text, "sidekick_failovers_total"));

        // A real failover and the failback after it count one each.
        a.Healthy = false;
        await WaitUntilAsync(() => server.Sites.ActiveSiteNumber == 2, "the failover to site 2");
        Assert.Equal(1, Value(await client.GetStringAsync("/.prometheus/metrics"), "sidekick_failovers_total"));
        a.Healthy = true;
        await WaitUntilAsync(() => server.Sites.ActiveSiteNumber == 1, "the failback to site 1");
        text = await client.GetStringAsync("/.prometheus/metrics");
        Assert.Equal(2, Value(text, "sidekick_failovers_total"));
        await MetricsAndTableTests.PromtoolAsync(text);
    }

    [Fact]
    public async Task No_site_for_a_while_is_no_failover()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        a.Healthy = false;
        await sidekick.WaitUntilAsync(() => sidekick.Server.Sites.ActiveSiteNumber == 0);
        a.Healthy = true;
        await sidekick.WaitUntilAsync(() => sidekick.Server.Sites.ActiveSiteNumber == 1);
        Assert.Equal(0, sidekick.Server.Sites.Failovers);
    }

    [Fact]
    public async Task Probes_are_counted_apart_from_proxied_requests()
    {
        await using var a = await TestBackend.StartAsync("a");
        // --trace all (upstream counted probes as calls unless --trace application): the count must not depend on it.
        var options = SidekickHarness.FastOptions with { Trace = "all" };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        var name = a.Url.ToString().TrimEnd('/');
        var probes = $"sidekick_probes_total{{endpoint=\"{name}\",site=\"1\",result=\"success\"}}";
        var deadline = Environment.TickCount64 + 15000;
        string text;
        while (Value(text = await sidekick.Client.GetStringAsync("/.prometheus/metrics"), probes) < 3)
        {
            Assert.True(Environment.TickCount64 < deadline, "waited for three successful probes");
            await Task.Delay(50);
        }

        Assert.Equal(0, Value(text, $"sidekick_requests_total{{endpoint=\"{name}\",site=\"1\"}}"));
        await sidekick.Client.GetStringAsync("/one");
        text = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.Equal(1, Value(text, $"sidekick_requests_total{{endpoint=\"{name}\",site=\"1\"}}"));
        Assert.True(Value(text, probes) >= 3);
        Assert.Equal(0, Value(text, $"sidekick_probes_total{{endpoint=\"{name}\",site=\"1\",result=\"failure\"}}"));
        Assert.Equal(1, sidekick.BackendOf(a).Stats.Calls);
        await MetricsAndTableTests.PromtoolAsync(text);
    }

    [Fact]
    public async Task Responses_are_counted_by_status_class_and_errors_keep_upstreams_meaning()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        await sidekick.Client.GetStringAsync("/ok");
        await sidekick.Client.GetStringAsync("/ok");
        a.FailWith = 404;
        using (await sidekick.Client.GetAsync("/missing"))
        {
        }

        a.FailWith = 500;
        using (await sidekick.Client.GetAsync("/broken"))
        {
        }

        var text = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        var labels = $"endpoint=\"{a.Url.ToString().TrimEnd('/')}\",site=\"1\"";
        Assert.Equal(2, Value(text, $"sidekick_responses_total{{{labels},class=\"2xx\"}}"));
        Assert.Equal(0, Value(text, $"sidekick_responses_total{{{labels},class=\"3xx\"}}"));
        Assert.Equal(1, Value(text, $"sidekick_responses_total{{{labels},class=\"4xx\"}}"));
        Assert.Equal(1, Value(text, $"sidekick_responses_total{{{labels},class=\"5xx\"}}"));
        Assert.Equal(4, Value(text, $"sidekick_requests_total{{{labels}}}"));
        // errors_total keeps upstream's meaning (status >= 400), so its dashboards read the same.
        Assert.Equal(2, Value(text, $"sidekick_errors_total{{{labels}}}"));
        await MetricsAndTableTests.PromtoolAsync(text);
    }

    [Fact]
    public async Task Process_metrics_describe_this_process()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        var text = await sidekick.Client.GetStringAsync("/.prometheus/metrics");

        using var self = System.Diagnostics.Process.GetCurrentProcess();
        var resident = Value(text, "process_resident_memory_bytes");
        Assert.InRange(resident, 1_000_000, 100_000_000_000);
        Assert.True(Value(text, "process_virtual_memory_bytes") >= resident);
        Assert.True(Value(text, "process_cpu_seconds_total") > 0);
        var open = Value(text, "process_open_fds");
        Assert.True(open > 3, $"open descriptors: {open}");
        Assert.True(Value(text, "process_max_fds") >= open);
        var start = DateTime.UnixEpoch.AddSeconds(Value(text, "process_start_time_seconds"));
        Assert.InRange(start, self.StartTime.ToUniversalTime().AddSeconds(-2), self.StartTime.ToUniversalTime().AddSeconds(2));
        Assert.Contains("# TYPE process_cpu_seconds_total counter\n", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE process_resident_memory_bytes gauge\n", text, StringComparison.Ordinal);
        await MetricsAndTableTests.PromtoolAsync(text);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = Environment.TickCount64 + 15000;
        while (!condition())
        {
            Assert.True(Environment.TickCount64 < deadline, $"waited 15 s for {what}");
            await Task.Delay(25);
        }
    }

    /// <summary>The value of the one sample named exactly <paramref name="series"/> (name and labels).</summary>
    private static double Value(string exposition, string series)
    {
        var match = Regex.Match(exposition, "^" + Regex.Escape(series) + " (\\S+)$", RegexOptions.Multiline);
        Assert.True(match.Success, $"no sample {series} in the exposition");
        return double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
    }
}
