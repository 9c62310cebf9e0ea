using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Sidekick.Observability;
using Sidekick.Tests.Integration;
using Sidekick.Topology;

namespace Sidekick.Tests.Observability;

public sealed class MetricsAndTableTests
{
    [Fact]
    public async Task Metrics_cover_every_site_count_requests_and_pass_promtool()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        var options = SidekickHarness.FastOptions with { Trace = "application", HealthDuration = TimeSpan.FromMinutes(5) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a], [b]);
        for (var i = 0; i < 7; i++)
        {
            await sidekick.Client.GetStringAsync("/x");
        }

        using (await sidekick.Client.GetAsync("/missing-but-404?"))
        {
        }

        var text = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        var aName = a.Url.ToString().TrimEnd('/');
        var bName = b.Url.ToString().TrimEnd('/');
        Assert.Contains($"sidekick_requests_total{{endpoint=\"{aName}\",site=\"1\"}} 8", text, StringComparison.Ordinal);
        Assert.Contains($"sidekick_requests_total{{endpoint=\"{bName}\",site=\"2\"}} 0", text, StringComparison.Ordinal);
        Assert.Contains($"sidekick_backend_up{{endpoint=\"{bName}\",site=\"2\"}} 1", text, StringComparison.Ordinal);
        Assert.Contains("sidekick_site_active{site=\"1\"} 1", text, StringComparison.Ordinal);
        Assert.Contains($"sidekick_request_duration_seconds_count{{endpoint=\"{aName}\",site=\"1\"}} 8", text, StringComparison.Ordinal);
        Assert.Contains("sidekick_tx_bytes_total", text, StringComparison.Ordinal);
        await PromtoolAsync(text);
    }

    [Fact]
    public async Task The_same_endpoint_in_two_sites_gives_distinct_series()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a], [a]);
        await sidekick.Client.GetStringAsync("/x");
        var text = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        var samples = text.Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#')).Select(l => l[..l.LastIndexOf(' ')]).ToArray();
        Assert.Equal(samples.Length, samples.Distinct().Count());
        await PromtoolAsync(text);
    }

    [Fact]
    public async Task The_same_endpoint_twice_in_one_site_gives_distinct_series_that_count_each_copy()
    {
        // Upstream takes an endpoint listed twice as two backends: two shares of the requests, two sets of counters.
        // Two series with the same labels would make Prometheus keep one sample and drop the other's counts.
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a, a]);
        for (var i = 0; i < 6; i++)
        {
            await sidekick.Client.GetStringAsync("/x");
        }

        var text = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        var samples = text.Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#')).Select(l => l[..l.LastIndexOf(' ')]).ToArray();
        Assert.Equal(samples.Length, samples.Distinct().Count());
        var name = a.Url.ToString().TrimEnd('/');
        var first = RequestCount(text, $"sidekick_requests_total{{endpoint=\"{name}\",site=\"1\"}} ");
        var second = RequestCount(text, $"sidekick_requests_total{{endpoint=\"{name}\",site=\"1\",copy=\"2\"}} ");
        Assert.Equal(6, first + second);
        await PromtoolAsync(text);

        static long RequestCount(string text, string series) =>
            long.Parse(text.Split('\n').Single(l => l.StartsWith(series, StringComparison.Ordinal))[series.Length..], System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task Build_info_names_the_version_commit_and_runtime()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        var text = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        var build = BuildInfo.Current;
        Assert.Contains("# TYPE sidekick_build_info gauge\n", text, StringComparison.Ordinal);
        Assert.Contains($"sidekick_build_info{{version=\"{build.Version}\",commit=\"{build.Commit}\",runtime=\"{build.Runtime}\"}} 1\n", text, StringComparison.Ordinal);
        // The same version --version prints, and a real commit: the test build comes from this git checkout.
        Assert.Equal(Sidekick.Cli.CommandLineParser.Version, build.Version);
        Assert.Matches("^[0-9a-f]{40}$", build.Commit);
        Assert.StartsWith(".NET ", build.Runtime, StringComparison.Ordinal);
        await PromtoolAsync(text);
    }

    internal static async Task PromtoolAsync(string text)
    {
        var promtool = FindPromtool();
        Assert.True(promtool is not null, "promtool is not installed: run scripts/test.sh (it installs the Debian package 'prometheus')");
        var start = new ProcessStartInfo(promtool!, "check metrics") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        await process.StandardInput.WriteAsync(text);
        process.StandardInput.Close();
        var errors = await process.StandardError.ReadToEndAsync() + await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, errors);
    }

    [Fact]
    public async Task State_endpoint_explains_why_traffic_goes_where_it_goes()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        await using var sidekick = await SidekickHarness.StartAsync([a], [b]);
        a.Healthy = false;
        await sidekick.WaitUntilAsync(() => !sidekick.BackendOf(a).IsUp);
        var state = JsonDocument.Parse(await sidekick.Client.GetStringAsync("/v1/state")).RootElement;
        Assert.Equal(2, state.GetProperty("activeSite").GetInt32());
        var first = state.GetProperty("sites")[0].GetProperty("backends")[0];
        Assert.Equal("down", first.GetProperty("status").GetString());
        Assert.Equal("response status 503", first.GetProperty("lastDownReason").GetString());
        Assert.Equal(503, first.GetProperty("lastProbe").GetProperty("status").GetInt32());
        Assert.Equal("up", state.GetProperty("sites")[1].GetProperty("backends")[0].GetProperty("status").GetString());
    }

    [Fact]
    public void Table_renders_sites_of_different_sizes()
    {
        Backend Make(string name, int site) =>
            new(new BackendDefinition(new Uri(name), name, new Uri(name + "/h")), site, TimeProvider.System);
        var store = new TopologyStore();
        var site1 = new[] { Make("http://a1:9000", 1), Make("http://a2:9000", 1), Make("http://a3:9000", 1) };
        var site2 = new[] { Make("http://b1:9000", 2) };
        site1[1].MarkUp();
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler());
        store.Publish(new TopologySnapshot([new Site(1, site1, invoker), new Site(2, site2, invoker)]));

        var table = new StatusTable(store, TimeProvider.System).Render();
        var lines = table.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("active site: 1st", lines[0]);
        Assert.Equal(8, lines.Length); // title, top border, header, four rows, bottom border
        Assert.Contains("│ 2nd ", lines[6], StringComparison.Ordinal);
        Assert.Contains("http://b1:9000", lines[6], StringComparison.Ordinal);
        Assert.Contains(" UP ", lines[4], StringComparison.Ordinal);
        Assert.Contains(" DOWN ", lines[3], StringComparison.Ordinal);
        Assert.All(lines.Skip(1), l => Assert.Equal(lines[1].Length, l.Length));
    }

    [Theory]
    [InlineData(1, "1st")]
    [InlineData(2, "2nd")]
    [InlineData(3, "3rd")]
    [InlineData(4, "4th")]
    [InlineData(11, "11th")]
    [InlineData(12, "12th")]
    [InlineData(21, "21st")]
    public void Ordinals(int n, string expected) => Assert.Equal(expected, StatusTable.Ordinal(n));

    [Fact]
    public async Task Log_and_trace_lines_reach_stdout_in_console_mode()
    {
        await using var a = await TestBackend.StartAsync("a");
        var output = new StringWriter();
        var options = SidekickHarness.FastOptions with { Log = true, Trace = "application", TraceExplicit = true, Json = true };
        var definitions = SidekickHarness.Definitions(options, [[a]]);
        await using (var server = Sidekick.Hosting.SidekickServer.Create(options, () => definitions,
                         new Sidekick.Hosting.SidekickSeams { Stdout = TextWriter.Synchronized(output), StdoutIsTerminal = false }))
        {
            await server.StartAsync();
            using var client = new HttpClient { BaseAddress = server.BaseAddress };
            var deadline = Environment.TickCount64 + 10000;
            while (server.Topology.Current.ActiveSite is null && Environment.TickCount64 < deadline)
            {
                await Task.Delay(20);
            }

            await client.GetStringAsync("/hello?x=1");
            await server.StopAsync();
        }

        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(lines, l => l.Contains("listening on", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("{\"Type\":\"LOG\"", StringComparison.Ordinal) && l.Contains("\"Status\":\"up\"", StringComparison.Ordinal));
        var trace = Assert.Single(lines, l => l.StartsWith("{\"type\":\"TRACE\"", StringComparison.Ordinal));
        Assert.Contains("\"path\":\"/hello\"", trace, StringComparison.Ordinal);
        Assert.DoesNotContain("\u001b", trace, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Diagnostics_listener_serves_gc_and_threadpool()
    {
        await using var a = await TestBackend.StartAsync("a");
        var port = Sidekick.Tests.Infrastructure.SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with { Pprof = $"127.0.0.1:{port}" };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        using var client = new HttpClient();
        var gc = JsonDocument.Parse(await client.GetStringAsync($"http://127.0.0.1:{port}/debug/gc")).RootElement;
        Assert.True(gc.GetProperty("heapSizeBytes").GetInt64() > 0);
        Assert.True(gc.GetProperty("generations").GetProperty("gen2").GetProperty("sizeAfterBytes").GetInt64() >= 0);
        Assert.Equal(5, gc.GetProperty("generations").EnumerateObject().Count());
        Assert.True(gc.GetProperty("compactionsAfterClosedConnections").GetInt32() >= 0);
        var pool = JsonDocument.Parse(await client.GetStringAsync($"http://127.0.0.1:{port}/debug/threadpool")).RootElement;
        Assert.True(pool.GetProperty("threadCount").GetInt32() > 0);
        // The diagnostics port never proxies.
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync($"http://127.0.0.1:{port}/x")).StatusCode);
    }

    private static string? FindPromtool() =>
        new[] { "/usr/bin/promtool", "/usr/local/bin/promtool" }.FirstOrDefault(File.Exists);
}
