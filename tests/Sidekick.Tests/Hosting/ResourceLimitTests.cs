using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Xunit.Abstractions;

namespace Sidekick.Tests.Hosting;

/// <summary>Slow and idle clients must not starve others or grow memory without bound (built program as a process).</summary>
[Collection(nameof(HeavyTests))]
public sealed class ResourceLimitTests(ITestOutputHelper output)
{
    private static long RssKb(Process process) =>
        long.Parse(File.ReadAllLines($"/proc/{process.Id}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The soft descriptor limit the runtime gave this process (it raises it to the hard limit at start-up).</summary>
    private static int OpenFileLimit()
    {
        var line = File.ReadAllLines("/proc/self/limits").First(l => l.StartsWith("Max open files", StringComparison.Ordinal));
        var soft = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries)[0];
        return soft == "unlimited" ? int.MaxValue : int.Parse(soft, System.Globalization.CultureInfo.InvariantCulture);
    }

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
        // Each slow client is cut by the 2 s header timeout; wait for each with a generous deadline.
        var cut = await Task.WhenAll(slow.Select(async tcp =>
        {
            try
            {
                var read = await tcp.GetStream().ReadAsync(new byte[256]).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
                return read >= 0; // a 408 or an orderly close both end the slow client
            }
            catch (Exception ex) when (ex is IOException or TimeoutException)
            {
                return ex is IOException;
            }
            finally
            {
                tcp.Dispose();
            }
        }));
        var closed = cut.Count(c => c);
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

        // 10,000 as the issue asks, fewer (never under 3,000) where the descriptor limit could not hold them.
        var count = int.TryParse(Environment.GetEnvironmentVariable("SIDEKICK_IDLE_CONNECTIONS"), out var n) ? n : Math.Clamp(OpenFileLimit() - 1_000, 3_000, 10_000);
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

    [Fact]
    public async Task Memory_stays_bounded_with_a_hundred_slow_readers_of_large_responses()
    {
        const int Readers = 100;
        const long Size = 100L * 1024 * 1024;
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);
        var before = RssKb(sidekick.Process);

        // Each reader asks for 100 MiB, takes the first 1 MiB and then stops reading: without backpressure the proxy
        // would pull the whole object from the backend into memory, 10 GiB in all.
        var readers = new List<TcpClient>();
        try
        {
            var buffer = new byte[64 * 1024];
            for (var i = 0; i < Readers; i++)
            {
                var tcp = new TcpClient { ReceiveBufferSize = 64 * 1024 };
                await tcp.ConnectAsync(IPAddress.Loopback, port);
                var stream = tcp.GetStream();
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET /download/{Size} HTTP/1.1\r\nHost: x\r\n\r\n"));
                for (long got = 0; got < 1024 * 1024;)
                {
                    var read = await stream.ReadAsync(buffer);
                    Assert.True(read > 0, "the response ended early");
                    got += read;
                }

                readers.Add(tcp);
            }

            long peak = 0;
            for (var sample = 0; sample < 6; sample++)
            {
                await Task.Delay(500);
                peak = Math.Max(peak, RssKb(sidekick.Process));
            }

            output.WriteLine($"RSS {before / 1024} MB idle, peak {peak / 1024} MB with {Readers} stalled readers of 100 MiB " +
                $"({(peak - before) / Readers} KiB each)");

            // Other clients are still served meanwhile.
            using var client = new HttpClient();
            Assert.Equal("a", await client.GetStringAsync($"http://127.0.0.1:{port}/x"));
            Assert.True((peak - before) / Readers < 1024, "more than 1 MiB of proxy memory per stalled reader");
        }
        finally
        {
            readers.ForEach(t => t.Dispose());
        }
    }
}
