using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Sidekick.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sidekick.Tests.Integration;

/// <summary>
/// A backend that answers every request with an endless run of 1xx interim heads (102 Processing every 50 ms) and
/// never a final one. docs/configuration.md: "the head as a whole must come within [--backend-timeout], on both
/// forwarding paths". The YARP path cuts it at the timeout (504); the HTTP/1.1 path restarts the clock at each
/// interim head and holds the client, the backend connection and the in-flight slot for ever.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class InterimFloodTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task Endless_interim_heads_are_cut_at_the_backend_timeout(string forwarder)
    {
        // Every request but a probe gets "102 Processing" every 50 ms, and never a final head.
        await using var backend = new ScriptedBackend(async (head, socket, stop) =>
        {
            if (head.StartsWith("GET /health", StringComparison.Ordinal))
            {
                await ScriptedBackend.AnswerProbeAsync(socket, stop);
                return;
            }

            while (true)
            {
                await socket.SendAsync("HTTP/1.1 102 Processing\r\n\r\n"u8.ToArray(), SocketFlags.None, stop);
                await Task.Delay(50, stop);
            }
        });

        var port = SidekickProcess.FreePort();
        var url = backend.Url.ToString();
        await using var sidekick = SidekickProcess.StartIn(Environment.CurrentDirectory, new Dictionary<string, string> { ["SIDEKICK_FORWARDER"] = forwarder },
            "--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", "--backend-timeout", "1s", url);
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
        var watch = Stopwatch.StartNew();
        HttpStatusCode? status = null;
        try
        {
            using var response = await client.GetAsync($"http://127.0.0.1:{port}/object");
            status = response.StatusCode;
        }
        catch (TaskCanceledException)
        {
        }

        output.WriteLine($"{forwarder}: {(status is null ? "no answer" : ((int)status).ToString())} after {watch.ElapsedMilliseconds} ms");
        Assert.True(status == HttpStatusCode.GatewayTimeout, $"{forwarder}: expected 504 after about 1 s, got {(status is null ? "no answer within 20 s" : ((int)status).ToString())}");
        Assert.InRange(watch.ElapsedMilliseconds, 900, 15_000);
    }
}
