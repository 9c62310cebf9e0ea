using System.Net;
using System.Net.Sockets;
using Sidekick.Cli;
using Sidekick.Demo;
using Sidekick.Hosting;

// The embedded demo: two sites of two backends each on loopback, sidekick in front, steady traffic, then
// site 1 goes away and comes back so the traffic visibly fails over and back.
var basePort = FindFreePorts(4);
var backends = new[]
{
    new DemoBackend("site1-node1", basePort), new DemoBackend("site1-node2", basePort + 1),
    new DemoBackend("site2-node1", basePort + 2), new DemoBackend("site2-node2", basePort + 3),
};
foreach (var backend in backends)
{
    await backend.StartAsync();
}

var listenPort = FindFreePorts(1);
string[] commandLine =
[
    "--health-path=/health", "--health-duration=500ms", "--address", $"127.0.0.1:{listenPort}", "--trace=",
    $"http://127.0.0.1:{{{basePort}...{basePort + 1}}}", $"http://127.0.0.1:{{{basePort + 2}...{basePort + 3}}}",
];
Console.WriteLine("$ sidekick " + string.Join(" ", commandLine));
var options = ((CommandLineResult.Run)CommandLineParser.Parse("sidekick", commandLine)).Options;
await using var instance = SidekickApp.Create(options);
var sidekick = instance.Server;
await sidekick.StartAsync();
Console.WriteLine($"sidekick listens on http://127.0.0.1:{listenPort} in front of 2 sites x 2 backends\n");

using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{listenPort}") };
await Task.Delay(800); // first probes

async Task TrafficAsync(string phase, int seconds)
{
    Console.WriteLine($"== {phase}");
    for (var second = 0; second < seconds; second++)
    {
        var served = new SortedDictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < 10; i++)
        {
            using var response = await client.GetAsync("/object");
            var who = response.IsSuccessStatusCode ? await response.Content.ReadAsStringAsync() : $"HTTP {(int)response.StatusCode}";
            served[who] = served.GetValueOrDefault(who) + 1;
            await Task.Delay(100);
        }

        Console.WriteLine("   10 requests -> " + string.Join(", ", served.Select(kv => $"{kv.Key}: {kv.Value}")));
    }
}

await TrafficAsync("all backends up: site 1 takes the traffic, spread over its two nodes", 3);
await backends[0].StopAsync();
await TrafficAsync("site1-node1 stopped: its share moves to site1-node2", 3);
await backends[1].StopAsync();
await TrafficAsync("site1-node2 stopped too: site 1 is down, traffic fails over to site 2", 3);
await backends[0].StartAsync();
await TrafficAsync("site1-node1 restarted: as soon as a probe sees it, traffic fails back to site 1", 4);

Console.WriteLine("\nretries made on the way (requests that never reached a dead node and were sent elsewhere): " + sidekick.Retries.Count.Value);
await sidekick.StopAsync();
foreach (var backend in backends)
{
    await backend.DisposeAsync();
}

Console.WriteLine("demo finished");
return 0;

static int FindFreePorts(int count)
{
    for (var attempt = 0; attempt < 200; attempt++)
    {
        var start = Random.Shared.Next(20000, 60000);
        var listeners = new List<TcpListener>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                var listener = new TcpListener(IPAddress.Loopback, start + i);
                listener.Start();
                listeners.Add(listener);
            }

            return start;
        }
        catch (SocketException)
        {
        }
        finally
        {
            listeners.ForEach(l => l.Stop());
        }
    }

    throw new InvalidOperationException("no free loopback ports found");
}
