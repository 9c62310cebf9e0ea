using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Xunit.Abstractions;

namespace Sidekick.Tests.Hosting;

/// <summary>Slow and idle clients must not starve others or grow memory without bound (built program as a process).</summary>
public sealed class ResourceLimitTests(ITestOutputHelper output)
{
    private static long RssKb(Process process) =>
        long.Parse(File.ReadAllLines($"/proc/{process.Id}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async Task Slowloris_clients_do_not_starve_normal_clients_and_are_cut_off()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "",
            "--client-header-timeout", "2s", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        // 300 clients that send a header byte now and then and never finish.
        var slow = new List<TcpClient>();
        for (var i = 0; i < 300; i++)
        {
            var tcp = new TcpClient();
            await tcp.ConnectAsync(IPAddress.Loopback, port);
            await tcp.GetStream().WriteAsync(Encoding.ASCII.GetBytes("GET /x HTTP/1.1\r\nHost: h\r\n"));
            slow.Add(tcp);
        }

        using var client = new HttpClient();
        var watch = Stopwatch.StartNew();
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal("a", await client.GetStringAsync($"http://127.0.0.1:{port}/x"));
        }

        output.WriteLine($"20 normal requests with 300 slowloris clients: {watch.ElapsedMilliseconds} ms");
        await Task.Delay(TimeSpan.FromSeconds(4));
        var closed = 0;
        foreach (var tcp in slow)
        {
            try
            {
                tcp.GetStream().ReadTimeout = 2000;
                var read = await tcp.GetStream().ReadAsync(new byte[256]).AsTask().WaitAsync(TimeSpan.FromSeconds(2));
                closed += read >= 0 ? 1 : 0; // a 408 or an orderly close both end the slow client
            }
            catch (Exception ex) when (ex is IOException or TimeoutException)
            {
                closed += ex is IOException ? 1 : 0;
            }
            finally
            {
                tcp.Dispose();
            }
        }

        Assert.True(closed >= 290, $"only {closed} of 300 slow clients were cut off");
    }

    [Fact]
    public async Task Memory_stays_bounded_with_thousands_of_idle_connections()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);
        var before = RssKb(sidekick.Process);

        // The suite opens 3,000 (file descriptor limits on small CI machines); bench/ documents 10,000.
        var count = int.TryParse(Environment.GetEnvironmentVariable("SIDEKICK_IDLE_CONNECTIONS"), out var n) ? n : 3000;
        var idle = new List<TcpClient>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                var tcp = new TcpClient();
                await tcp.ConnectAsync(IPAddress.Loopback, port);
                idle.Add(tcp);
            }

            await Task.Delay(1000);
            var after = RssKb(sidekick.Process);
            output.WriteLine($"RSS {before / 1024} MB idle, {after / 1024} MB with {count} idle connections ({(after - before) * 1024 / count} bytes each)");
            using var client = new HttpClient();
            Assert.Equal("a", await client.GetStringAsync($"http://127.0.0.1:{port}/x"));
            Assert.True((after - before) * 1024 / count < 20 * 1024, "more than 20 KiB per idle connection");
        }
        finally
        {
            idle.ForEach(t => t.Dispose());
        }
    }
}
