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

    /// <summary>Runs sidekick with JSON traces, lets <paramref name="drive"/> send requests, returns "path forwarder reason" per trace.</summary>
    private static async Task<string[]> RunAsync(TestBackend backend, string forwarder, Func<HttpClient, Task> drive)
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
            await server.StopAsync();
        }

        return output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(l => l.StartsWith("{\"type\":\"TRACE\"", StringComparison.Ordinal))
            .Select(l => JsonDocument.Parse(l).RootElement)
            .Where(t => t.GetProperty("path").GetString() != "/.prometheus/metrics")
            .Select(t => $"{t.GetProperty("path").GetString()} {t.GetProperty("forwarder").GetString()} {t.GetProperty("forwarderReason").GetString()}")
            .ToArray();
    }
}
