using System.Net;
using System.Net.Sockets;
using System.Text;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Xunit.Abstractions;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A cache store (hostile, or a broken one behind a gateway) that answers with an S3 error whose Message is 8 MiB.
/// The store's own reads (StoreRequests, the health probe among them) read a refusal's body up to a bound, and so do
/// the AWS SDK's calls (StoreHttpClients.BoundedAnswers, see StoreWriteErrorBodyTests): the text must not land whole in
/// the --log line, in /v1/state's lastError or in memory.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class StoreErrorBodyTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_store_error_with_a_huge_message_is_not_copied_whole_into_the_log_and_the_state()
    {
        var body = Encoding.ASCII.GetBytes("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>" +
            new string('x', 8 * 1024 * 1024) + "</Message></Error>");
        var head = Encoding.ASCII.GetBytes($"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {body.Length}\r\n\r\n");
        await using var store = new ScriptedBackend(async (_, socket, stop) =>
        {
            await socket.SendAsync(head, SocketFlags.None, stop);
            await socket.SendAsync(body, SocketFlags.None, stop);
        });

        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        var admin = SidekickProcess.FreePort();
        var environment = new Dictionary<string, string>
        {
            ["SIDEKICK_CACHE_ENDPOINT"] = store.Url.ToString().TrimEnd('/'),
            ["SIDEKICK_CACHE_ACCESS_KEY"] = "k",
            ["SIDEKICK_CACHE_SECRET_KEY"] = "s",
            ["SIDEKICK_CACHE_BUCKET"] = "cache",
            ["SIDEKICK_CACHE_HEALTH_DURATION"] = "1s",
        };
        await using var sidekick = SidekickProcess.StartIn(Environment.CurrentDirectory, environment,
            "--address", $"127.0.0.1:{port}", "--admin-address", $"127.0.0.1:{admin}", "--health-path", "/health", "--trace", "", "--log", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        var deadline = Environment.TickCount64 + 30_000;
        while (!sidekick.Stdout.Contains("cache store", StringComparison.Ordinal) && Environment.TickCount64 < deadline)
        {
            await Task.Delay(100);
        }

        using var client = new HttpClient();
        var state = await client.GetStringAsync($"http://127.0.0.1:{admin}/v1/state");
        var longest = sidekick.Stdout.Split('\n').Max(line => line.Length);
        var rss = File.ReadAllLines($"/proc/{sidekick.Process.Id}/status").First(l => l.StartsWith("VmRSS", StringComparison.Ordinal));
        output.WriteLine($"longest stdout line {longest} chars, /v1/state {state.Length} chars, {rss}");
        Assert.True(longest < 64 * 1024, $"a store's error text made a log line of {longest} characters");
        Assert.True(state.Length < 64 * 1024, $"a store's error text made /v1/state {state.Length} characters long");
    }
}
