using System.Text.Json;
using Sidekick.Hosting;

namespace Sidekick.Tests.Integration;

/// <summary>Which forwarding path carried a request, and why, is in the trace record and the metrics.</summary>
public sealed class ForwardingPathTests
{
    [Fact]
    public async Task The_path_and_its_reason_appear_in_traces_and_metrics()
    {
        await using var a = await TestBackend.StartAsync("a");
        var traces = await RunAsync(a, "http1", async client =>
        {
            await client.GetStringAsync("/plain");
            using var chunked = new HttpRequestMessage(HttpMethod.Put, "/upload") { Content = new StreamContent(new MemoryStream(new byte[10])) };
            chunked.Headers.TransferEncodingChunked = true;
            (await client.SendAsync(chunked)).Dispose();
            (await client.PutAsync("/upload", new ByteArrayContent(new byte[100_000]))).Dispose();
            var metrics = await client.GetStringAsync("/.prometheus/metrics");
            Assert.Contains("sidekick_forwarded_total{path=\"http1\",reason=\"plain\"} 1", metrics, StringComparison.Ordinal);
            Assert.Contains("sidekick_forwarded_total{path=\"yarp\",reason=\"body_unknown_length\"} 1", metrics, StringComparison.Ordinal);
            Assert.Contains("sidekick_forwarded_total{path=\"yarp\",reason=\"body_over_64k\"} 1", metrics, StringComparison.Ordinal);
        });
        Assert.Equal(["/plain http1 plain", "/upload yarp body_unknown_length", "/upload yarp body_over_64k"], traces);

        var forced = await RunAsync(a, "yarp", client => client.GetStringAsync("/plain"));
        Assert.Equal(["/plain yarp forced"], forced);
    }

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task A_client_that_leaves_before_the_answer_is_traced_as_499_not_a_gateway_error(string forwarder)
    {
        await using var a = await TestBackend.StartAsync("a");
        var statuses = await RunAsync(a, forwarder, async client =>
        {
            // The client leaves once the backend has the request (not on a timer: on a busy host the request might
            // not have reached sidekick yet, and a request never read is never traced).
            using var leave = new CancellationTokenSource();
            var sent = client.GetAsync("/slow?ms=3000", leave.Token);
            while (!a.Seen.Any(r => r.RawTarget.StartsWith("/slow", StringComparison.Ordinal)))
            {
                await Task.Delay(10);
            }

            await leave.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sent);
        }, "statusCode", until: text => text.Contains("\"path\":\"/slow\"", StringComparison.Ordinal));
        Assert.Equal(["/slow 499"], statuses);
    }

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task Each_trace_record_names_its_own_requests_client_on_a_kept_alive_connection(string forwarder)
    {
        // The plain path hands the trace the client fields it found while copying the request; the request after it on
        // the same connection (here one that takes YARP's path, with none of those fields) must name its own client,
        // the peer, and never a field a request before it sent.
        await using var a = await TestBackend.StartAsync("a");
        var clients = await RunAsync(a, forwarder, async client =>
        {
            await SendAsync(client, HttpMethod.Get, "/xff", ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"));
            await SendAsync(client, HttpMethod.Put, "/chunked", chunked: true);
            await SendAsync(client, HttpMethod.Get, "/real-ip", ("X-Real-IP", "198.51.100.2"));
            await SendAsync(client, HttpMethod.Get, "/forwarded", ("Forwarded", "for=\"[2001:db8::5]:4711\";proto=http"));
            await SendAsync(client, HttpMethod.Get, "/none");
        }, "client");
        Assert.Equal(["/xff 203.0.113.7", "/chunked 127.0.0.1", "/real-ip 198.51.100.2", "/forwarded 2001:db8::5", "/none 127.0.0.1"], clients);

        static async Task SendAsync(HttpClient client, HttpMethod method, string path, (string Name, string Value)? field = null, bool chunked = false)
        {
            using var request = new HttpRequestMessage(method, path);
            if (field is var (name, value))
            {
                Assert.True(request.Headers.TryAddWithoutValidation(name, value));
            }

            if (chunked)
            {
                request.Content = new StreamContent(new MemoryStream(new byte[10]));
                request.Headers.TransferEncodingChunked = true;
            }

            using var response = await client.SendAsync(request);
            response.EnsureSuccessStatusCode();
        }
    }

    /// <summary>Runs sidekick with JSON traces, lets <paramref name="drive"/> send requests, returns "path forwarder reason" per trace.</summary>
    /// <param name="until">Waited for in the output before stopping (an exchange the client left ends on its own time).</param>
    private static async Task<string[]> RunAsync(TestBackend backend, string forwarder, Func<HttpClient, Task> drive, string? field = null, Func<string, bool>? until = null)
    {
        var output = new StringWriter();
        var options = SidekickHarness.FastOptions with { Trace = "application", TraceExplicit = true, Json = true };
        var definitions = SidekickHarness.Definitions(options, [[backend]]);
        await using (var server = SidekickServer.Create(options, () => definitions,
                         new SidekickSeams { Stdout = TextWriter.Synchronized(output), StdoutIsTerminal = false, Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) }))
        {
            await server.StartAsync();
            using var client = new HttpClient { BaseAddress = server.BaseAddress };
            var deadline = Environment.TickCount64 + 15000;
            while (server.Topology.Current.ActiveSite is null)
            {
                Assert.True(Environment.TickCount64 < deadline, "no backend came up within 15 s");
                await Task.Delay(20);
            }

            await drive(client);
            while (until is not null && !until(output.ToString()))
            {
                Assert.True(Environment.TickCount64 < deadline + 30000, "the awaited trace record was not written");
                await Task.Delay(20);
            }

            await server.StopAsync();
        }

        return output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(l => l.StartsWith("{\"type\":\"TRACE\"", StringComparison.Ordinal))
            .Select(l => JsonDocument.Parse(l).RootElement)
            .Where(t => t.GetProperty("path").GetString() != "/.prometheus/metrics")
            .Select(t => field is null
                ? $"{t.GetProperty("path").GetString()} {t.GetProperty("forwarder").GetString()} {t.GetProperty("forwarderReason").GetString()}"
                : $"{t.GetProperty("path").GetString()} {t.GetProperty(field)}")
            .ToArray();
    }
}
