using System.Net;
using System.Text;
using System.Text.Json;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;
using Sidekick.Topology;

namespace Sidekick.Tests.Caching;

/// <summary>
/// The cache talks to backends only through the forwarding path: the backend sees the same request shape
/// whichever route a request takes, the client sees header values exactly as the backend sent them, and cache
/// traffic is counted and traced like any other.
/// </summary>
public sealed class CacheExchangeTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const int Size = 4096;

    /// <summary>The client's request: odd target bytes, a prior hop, hop-by-hop fields and spoofed forwarding fields.</summary>
    /// <param name="path">Where in the bucket.</param>
    /// <param name="namesAField">With "Connection: X-Drop": a request whose Connection names a field bypasses the cache
    /// (the field would choose an entry it never reached the origin in), so cache routes are asked without it.</param>
    private static string ClientRequest(string path, bool namesAField = true) =>
        $"GET /bucket/{path}%2Fk;x?b=2&a=1 HTTP/1.1\r\nHost: s3.example:9000\r\nX-Forwarded-For: 9.9.9.9\r\n" +
        (namesAField ? "Connection: X-Drop\r\nX-Drop: 1\r\n" : "") +
        "Proxy-Connection: x\r\nTE: trailers\r\nKeep-Alive: 5\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: spoofed.example\r\nX-End-To-End: kept\r\n\r\n";

    [Fact]
    public async Task Every_route_to_a_backend_shapes_the_request_the_same_way()
    {
        await using var backend = new RawBackend(Objects);
        var heads = new Dictionary<string, string>();

        foreach (var forwarder in new[] { "http1", "yarp" })
        {
            await using var plain = await StartPlainAsync(backend.Url, forwarder);
            await RawClient.ExchangeAsync(plain.BaseAddress.Port, ClientRequest("plain-" + forwarder));
            heads[forwarder] = backend.Requests.Last().Head;
        }

        var (instance, _) = await fixture.StartSidekickAsync([backend.Url], SidekickHarness.FastOptions);
        await using (instance)
        {
            var port = instance.Server.BaseAddress.Port;
            var bypassed = await RawClient.ExchangeAsync(port, ClientRequest("bypass"));
            Assert.Equal(["BYPASS"], bypassed.Values("X-Cache"));
            heads["cache bypass"] = backend.Requests.Last().Head;

            await RawClient.ExchangeAsync(port, ClientRequest("fill", namesAField: false));
            heads["cache fill"] = backend.Requests.Last().Head;

            await FillAsync(instance, port, "stale", fills: 2);
            await RawClient.ExchangeAsync(port, ClientRequest("stale", namesAField: false));
            heads["cache revalidation"] = backend.Requests.Last().Head;

            await FillAsync(instance, port, "swr", fills: 3);
            var served = await RawClient.ExchangeAsync(port, ClientRequest("swr", namesAField: false));
            Assert.Equal(["HIT"], served.Values("X-Cache"));
            await fixture.Eventually(() => backend.Requests.Count(r => r.Target.Contains("/swr", StringComparison.Ordinal)) == 2, "the background revalidation");
            heads["background revalidation"] = backend.Requests.Last(r => r.Target.Contains("/swr", StringComparison.Ordinal)).Head;
        }

        var client = Sidekick.Forwarding.ClientAddress.For(IPAddress.Loopback);
        foreach (var (route, head) in heads)
        {
            var fields = Fields(head);
            Assert.True(head.StartsWith("GET /bucket/", StringComparison.Ordinal) && head.Contains("%2Fk;x?b=2&a=1 HTTP/1.1\r\n", StringComparison.Ordinal), $"{route}: {head}");
            Assert.Equal(["s3.example:9000"], fields("Host"));
            Assert.Equal([$"9.9.9.9, {client}"], fields("X-Forwarded-For"));
            Assert.Equal([client], fields("X-Real-IP"));
            Assert.Equal(["s3.example:9000"], fields("X-Forwarded-Host"));
            Assert.Equal(["kept"], fields("X-End-To-End"));
            foreach (var hop in new[] { "Connection", "X-Drop", "Proxy-Connection", "TE", "Keep-Alive", "Transfer-Encoding" })
            {
                Assert.True(fields(hop).Length == 0, $"{route} sent {hop}: {head}");
            }
        }
    }

    [Fact]
    public async Task Header_values_reach_the_client_as_the_backend_sent_them_on_miss_hit_and_revalidated()
    {
        const string odd =
            "cache-control: Max-Age=600, X-Unknown-Directive=\"a, b\", Public\r\nCache-Control: No-Transform\r\n" +
            "ETag: \"AbC-123\"\r\nExpires: Thu, 01 Dec 2094 16:00:00 GMT\r\nAge: 3\r\nvary: Accept-Encoding\r\nVARY: X-Variant\r\n" +
            "X-Custom: one\r\nX-Custom: two\r\nx-MiXeD-CaSe: Value  With  Spaces\r\n";
        await using var backend = new RawBackend(request =>
        {
            if (request.Head.Contains("\r\nIf-None-Match: \"AbC-123\"\r\n", StringComparison.OrdinalIgnoreCase))
            {
                // §4.3.4: these replace the stored fields of the same name in what is served.
                return RawResponse.Text("HTTP/1.1 304 Not Modified\r\nETag: \"AbC-123\"\r\nCache-Control: MAX-AGE=0, Must-Revalidate\r\nX-Custom: Three\r\n\r\n");
            }

            var cacheControl = request.Target.Contains("stale", StringComparison.Ordinal)
                ? odd.Replace("Max-Age=600", "max-age=0", StringComparison.Ordinal)
                : odd;
            return RawResponse.Text($"HTTP/1.1 200 OK\r\nContent-Length: {Size}\r\n{cacheControl}\r\n{new string('x', Size)}");
        });
        var (instance, _) = await fixture.StartSidekickAsync([backend.Url], SidekickHarness.FastOptions);
        await using var running = instance;
        var port = instance.Server.BaseAddress.Port;
        const string request = "GET /bucket/{0} HTTP/1.1\r\nHost: s3.example\r\nAccept-Encoding: gzip\r\nX-Variant: v\r\n\r\n";

        var miss = await RawClient.ExchangeAsync(port, string.Format(System.Globalization.CultureInfo.InvariantCulture, request, "fresh"));
        Assert.Equal(["MISS"], miss.Values("X-Cache"));
        AssertOdd(miss, expectAge: "3");
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted >= 1, "the fill");

        var hit = await RawClient.ExchangeAsync(port, string.Format(System.Globalization.CultureInfo.InvariantCulture, request, "fresh"));
        Assert.Equal(["HIT"], hit.Values("X-Cache"));
        AssertOdd(hit, expectAge: null);
        Assert.True(int.Parse(Assert.Single(hit.Values("Age")), System.Globalization.CultureInfo.InvariantCulture) >= 3);

        await RawClient.ExchangeAsync(port, string.Format(System.Globalization.CultureInfo.InvariantCulture, request, "stale"));
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted >= 2, "the second fill");
        var revalidated = await RawClient.ExchangeAsync(port, string.Format(System.Globalization.CultureInfo.InvariantCulture, request, "stale"));
        Assert.Equal(["REVALIDATED"], revalidated.Values("X-Cache"));
        Assert.Equal(["MAX-AGE=0, Must-Revalidate"], revalidated.Values("Cache-Control"));
        Assert.Equal(["Three"], revalidated.Values("X-Custom"));
        Assert.Equal(["\"AbC-123\""], revalidated.Values("ETag"));
        Assert.Equal(["Thu, 01 Dec 2094 16:00:00 GMT"], revalidated.Values("Expires"));
        Assert.Equal(["Accept-Encoding", "X-Variant"], revalidated.Values("Vary"));
        Assert.Equal(["Value  With  Spaces"], revalidated.Values("x-mixed-case"));
        Assert.Equal(new string('x', Size), revalidated.Body);
    }

    [Fact]
    public async Task Cache_traffic_is_counted_and_traced_like_any_other()
    {
        var statuses = new Queue<int>([200, 503, 503]);
        await using var backend = new RawBackend(request => request.Head.Contains("If-None-Match", StringComparison.OrdinalIgnoreCase) && statuses.Count > 0 && statuses.Peek() != 200
            ? RawResponse.Text($"HTTP/1.1 {statuses.Dequeue()} Slow Down\r\nContent-Length: 0\r\n\r\n")
            : Objects(request));
        var output = new StringWriter();
        var options = SidekickHarness.FastOptions with
        {
            Trace = "application", TraceExplicit = true, Json = true, OutlierConsecutiveErrors = 2, OutlierMaxEjectionPercent = 100,
        };
        var (instance, client) = await fixture.StartSidekickAsync([backend.Url], options, stdout: TextWriter.Synchronized(output));
        await using var running = instance;
        var stats = instance.Server.Topology.Current.AllBackends.Single().Stats;

        using (var miss = await client.GetAsync("/bucket/stale-counted"))
        {
            Assert.Equal(Size, (await miss.Content.ReadAsByteArrayAsync()).Length);
        }

        await fixture.Eventually(() => stats.TxBytes >= Size && stats.RxBytes > 0, "bytes both ways in the backend's statistics");
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted >= 1, "the fill");
        statuses.Dequeue();

        // Two revalidations answered 503: two gateway errors in a row eject the backend.
        for (var i = 0; i < 2; i++)
        {
            (await client.GetAsync("/bucket/stale-counted")).Dispose();
        }

        var metrics = await client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains("sidekick_outlier_ejections_total 1", metrics, StringComparison.Ordinal);
        await instance.Server.StopAsync();

        JsonElement[] Traces() => output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(l => l.StartsWith("{\"type\":\"TRACE\"", StringComparison.Ordinal))
            .Select(l => JsonDocument.Parse(l).RootElement)
            .Where(t => t.GetProperty("path").GetString() == "/bucket/stale-counted")
            .ToArray();

        // Trace lines are written in batches (a 20 ms gathering pause, OutputQueue): the last ones may still be queued.
        await fixture.Eventually(() => Traces().Count(t => t.GetProperty("statusCode").GetInt32() == 503) >= 2, "both 503 trace lines");
        var traces = Traces();
        var fill = traces.First();
        Assert.Equal("MISS", fill.GetProperty("cache").GetString());
        Assert.Equal(200, fill.GetProperty("statusCode").GetInt32());
        Assert.True(fill.GetProperty("forwarder").GetString() is "http1" or "yarp");
        Assert.True(fill.GetProperty("callStats").GetProperty("tx").GetInt64() >= Size);
        Assert.Equal(2, traces.Count(t => t.GetProperty("statusCode").GetInt32() == 503));
    }

    private static RawResponse Objects(RawRequest request)
    {
        var cacheControl = request.Target.Contains("/swr", StringComparison.Ordinal) ? "max-age=0, stale-while-revalidate=600"
            : request.Target.Contains("/stale", StringComparison.Ordinal) ? "max-age=0"
            : "max-age=600";
        return request.Head.Contains("\r\nIf-None-Match: \"e1\"\r\n", StringComparison.OrdinalIgnoreCase)
            ? RawResponse.Text($"HTTP/1.1 304 Not Modified\r\nETag: \"e1\"\r\nCache-Control: {cacheControl}\r\n\r\n")
            : RawResponse.Text($"HTTP/1.1 200 OK\r\nContent-Length: {Size}\r\nETag: \"e1\"\r\nCache-Control: {cacheControl}\r\n\r\n{new string('b', Size)}");
    }

    private static void AssertOdd(RawAnswer answer, string? expectAge)
    {
        Assert.Equal(["Max-Age=600, X-Unknown-Directive=\"a, b\", Public", "No-Transform"], answer.Values("Cache-Control"));
        Assert.Equal(["\"AbC-123\""], answer.Values("ETag"));
        Assert.Equal(["Thu, 01 Dec 2094 16:00:00 GMT"], answer.Values("Expires"));
        Assert.Equal(["Accept-Encoding", "X-Variant"], answer.Values("Vary"));
        Assert.Equal(["one", "two"], answer.Values("X-Custom"));
        Assert.Equal(["Value  With  Spaces"], answer.Values("x-mixed-case"));
        if (expectAge is not null)
        {
            Assert.Equal([expectAge], answer.Values("Age"));
        }

        Assert.Equal(new string('x', Size), answer.Body);
    }

    private async Task FillAsync(SidekickInstance instance, int port, string path, int fills)
    {
        await RawClient.ExchangeAsync(port, ClientRequest(path, namesAField: false));
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted >= fills, $"fill {fills} ({path})");
    }

    private static Func<string, string[]> Fields(string head) => name => head.Split("\r\n")
        .Where(l => l.StartsWith(name + ":", StringComparison.OrdinalIgnoreCase))
        .Select(l => l[(name.Length + 1)..].Trim())
        .ToArray();

    private static Task<SidekickHarness> StartPlainAsync(Uri backend, string forwarder)
    {
        var options = SidekickHarness.FastOptions;
        var url = backend.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(backend, url, new Uri(url + options.HealthPath))])];
        return SidekickHarness.StartAsync(options, sites, new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) });
    }
}
