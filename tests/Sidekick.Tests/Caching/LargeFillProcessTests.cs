using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Sidekick.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Large fills through the built program as a process, with the default cache settings (only the store and the
/// spool directory given) and s3rver as the store, read by curl at full speed as users read: a 1 GiB object in
/// bounded memory, and 20 clients filling 20 objects at once. Completion is read from /v1/state and the
/// metrics, never waited for by time.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed partial class LargeFillProcessTests(CacheFixture fixture, ITestOutputHelper output) : IClassFixture<CacheFixture>
{
    private const long MiB = 1024 * 1024;

    /// <summary>How long the fills may take to reach the store before the test says they never did (a busy machine is slow, not wrong).</summary>
    private static readonly TimeSpan Patience = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task A_1_GiB_object_is_filled_in_bounded_memory_and_is_a_hit_the_second_time()
    {
        const string Path = "/bucket/one-gib.bin";
        await using var origin = await GeneratedOrigin.StartAsync();
        var item = origin.Add(Path, 1024 * MiB, seed: 0x5EED_0001);
        var expected = Task.Run(item.Sha256);
        var spool = Directory.CreateTempSubdirectory("sidekick-spool-1gib").FullName;
        try
        {
            await using var sidekick = await RunningSidekick.StartAsync(fixture, origin, spool);
            var url = sidekick.Url(Path);
            var watch = Stopwatch.StartNew();
            CurlResult miss;
            long fillPeakKb;
            int samples;
            bool spoolUsed;
            using (var sampler = RssSampler.Start(sidekick.Process.Process.Id, spool))
            {
                miss = await CurlAsync(url);
                output.WriteLine($"MISS: {miss.Length} bytes in {miss.Elapsed.TotalSeconds:F1} s ({miss.Length / MiB / miss.Elapsed.TotalSeconds:F0} MiB/s)");

                // Between the body and the upload's end /v1/state shows the fill with its whole length reserved
                // (or nothing, if the upload kept pace with curl), of the default 4 GiB.
                var during = await sidekick.StateAsync();
                output.WriteLine($"/v1/state after the MISS: {during}");
                Assert.Equal(4096 * MiB, during.GetProperty("spoolCapacityBytes").GetInt64());
                Assert.Contains(during.GetProperty("spoolBytes").GetInt64(), new[] { 0, item.Size });

                await sidekick.WaitForFillsAsync(expectedCompleted: 1);
                output.WriteLine($"upload complete {watch.Elapsed.TotalSeconds:F1} s after the request");
                (fillPeakKb, samples, spoolUsed) = sampler.Stop();
            }

            Assert.Contains("X-Cache: MISS", miss.Headers, StringComparison.OrdinalIgnoreCase);
            Assert.Equal(item.Size, miss.Length);
            Assert.Equal(Convert.ToHexString(await expected), Convert.ToHexString(miss.Sha256));
            output.WriteLine($"sidekick RSS peak during the fill: {fillPeakKb / 1024} MB ({samples} samples)");
            Assert.True(spoolUsed, $"no spool file ever appeared in {spool}: the fill did not spool where SIDEKICK_CACHE_SPOOL_DIR said");
            Assert.True(fillPeakKb < 100 * 1024, $"sidekick's RSS reached {fillPeakKb / 1024} MB during the 1 GiB fill (limit 100 MB)");

            // The spool is empty once the upload is done.
            await WaitAsync(() => Directory.GetFiles(spool).Length == 0, "the spool directory to be empty");
            var after = await sidekick.StateAsync();
            Assert.Equal(0, after.GetProperty("spoolBytes").GetInt64());
            Assert.Equal(0, after.GetProperty("fillsInFlight").GetInt32());

            watch.Restart();
            CurlResult hit;
            long hitPeakKb;
            using (var sampler = RssSampler.Start(sidekick.Process.Process.Id, spool))
            {
                hit = await CurlAsync(url);
                (hitPeakKb, _, _) = sampler.Stop();
            }

            output.WriteLine($"HIT: {hit.Length} bytes in {hit.Elapsed.TotalSeconds:F1} s; RSS peak {hitPeakKb / 1024} MB");
            Assert.Contains("X-Cache: HIT", hit.Headers, StringComparison.OrdinalIgnoreCase);
            Assert.Equal(item.Size, hit.Length);
            Assert.Equal(Convert.ToHexString(miss.Sha256), Convert.ToHexString(hit.Sha256));
            Assert.Equal(1, origin.Served(Path));
        }
        finally
        {
            Directory.Delete(spool, recursive: true);
        }
    }

    [Fact]
    public async Task Twenty_clients_filling_twenty_64_MiB_objects_at_once_all_get_them_and_all_are_cached()
    {
        // The requirement: with the default settings, 20 concurrent misses of 20 different objects are all
        // cached (20 x 64 MiB fits the default 4 GiB spool budget).
        const int Clients = 20;
        await using var origin = await GeneratedOrigin.StartAsync();
        var items = Enumerable.Range(0, Clients).Select(i => origin.Add($"/bucket/part-{i:D2}.bin", 64 * MiB, seed: 0x5EED_1000 + (ulong)i)).ToArray();
        var expected = Task.Run(() => items.Select(i => Convert.ToHexString(i.Sha256())).ToArray());
        var spool = Directory.CreateTempSubdirectory("sidekick-spool-20").FullName;
        try
        {
            await using var sidekick = await RunningSidekick.StartAsync(fixture, origin, spool);
            var watch = Stopwatch.StartNew();
            var misses = await Task.WhenAll(Enumerable.Range(0, Clients).Select(i => CurlAsync(sidekick.Url($"/bucket/part-{i:D2}.bin"))));
            output.WriteLine($"{Clients} concurrent MISS reads of 64 MiB: {watch.Elapsed.TotalSeconds:F1} s");
            var hashes = await expected;
            for (var i = 0; i < Clients; i++)
            {
                Assert.Equal(64 * MiB, misses[i].Length);
                Assert.Equal(hashes[i], Convert.ToHexString(misses[i].Sha256));
            }

            var state = await sidekick.WaitForFillsAsync(expectedCompleted: Clients);
            output.WriteLine($"all uploads ended {watch.Elapsed.TotalSeconds:F1} s after the requests; state: {state}");
            var metrics = await sidekick.MetricsAsync();
            Assert.True(Metric(metrics, "sidekick_cache_fills_total") == Clients,
                $"{Metric(metrics, "sidekick_cache_fills_total")} of {Clients} concurrent misses started a fill with the default settings " +
                $"(SIDEKICK_CACHE_MAX_FILLS defaults to {new Sidekick.Caching.CacheOptions { Endpoint = new Uri("http://x"), AccessKey = "", SecretKey = "", Bucket = "" }.MaxFills}); " +
                $"all {Clients} must be cached. X-Cache of the misses: {string.Join(", ", misses.Select(m => m.XCache))}");
            Assert.Equal(Clients, Metric(metrics, "sidekick_cache_fills_completed_total"));
            await WaitAsync(() => Directory.GetFiles(spool).Length == 0, "the spool directory to be empty");

            watch.Restart();
            var hits = await Task.WhenAll(Enumerable.Range(0, Clients).Select(i => CurlAsync(sidekick.Url($"/bucket/part-{i:D2}.bin"))));
            output.WriteLine($"{Clients} concurrent HIT reads of 64 MiB: {watch.Elapsed.TotalSeconds:F1} s");
            for (var i = 0; i < Clients; i++)
            {
                Assert.True(hits[i].XCache == "HIT", $"part-{i:D2}.bin was {hits[i].XCache} the second time");
                Assert.Equal(64 * MiB, hits[i].Length);
                Assert.Equal(hashes[i], Convert.ToHexString(hits[i].Sha256));
                Assert.Equal(1, origin.Served($"/bucket/part-{i:D2}.bin"));
            }
        }
        finally
        {
            Directory.Delete(spool, recursive: true);
        }
    }

    private static long Metric(string metrics, string name)
    {
        var match = Regex.Match(metrics, "^" + Regex.Escape(name) + " (\\d+)$", RegexOptions.Multiline);
        Assert.True(match.Success, $"{name} is not in the metrics");
        return long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    private static async Task WaitAsync(Func<bool> condition, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            if (deadline.Elapsed > Patience)
            {
                throw new TimeoutException($"waited {Patience.TotalSeconds} s for {what}");
            }

            await Task.Delay(50);
        }
    }

    /// <summary>
    /// curl at full speed, as a user reads an object: the body is hashed as it comes through a pipe (nothing
    /// written to disk, no copy in memory), the response head kept.
    /// </summary>
    private static async Task<CurlResult> CurlAsync(string url)
    {
        var headers = System.IO.Path.GetTempFileName();
        try
        {
            var start = new ProcessStartInfo("curl", ["-sS", "--fail", "--max-time", "600", "-D", headers, "-o", "-", url])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            var watch = Stopwatch.StartNew();
            using var curl = Process.Start(start)!;
            var stderr = curl.StandardError.ReadToEndAsync();
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[1024 * 1024];
            long length = 0;
            var body = curl.StandardOutput.BaseStream;
            int read;
            while ((read = await body.ReadAsync(buffer)) > 0)
            {
                hash.AppendData(buffer, 0, read);
                length += read;
            }

            await curl.WaitForExitAsync();
            Assert.True(curl.ExitCode == 0, $"curl {url} exited {curl.ExitCode}: {await stderr}");
            var head = await File.ReadAllTextAsync(headers);
            var xCache = XCacheLine().Match(head) is { Success: true } m ? m.Groups[1].Value : "(none)";
            return new CurlResult(head, xCache, length, hash.GetHashAndReset(), watch.Elapsed);
        }
        finally
        {
            File.Delete(headers);
        }
    }

    [GeneratedRegex(@"^X-Cache: *(\S+)", RegexOptions.Multiline | RegexOptions.IgnoreCase)]
    private static partial Regex XCacheLine();

    private sealed record CurlResult(string Headers, string XCache, long Length, byte[] Sha256, TimeSpan Elapsed);

    /// <summary>sidekick as a process with only the store and the spool directory set: every other cache setting is its default.</summary>
    private sealed class RunningSidekick : IAsyncDisposable
    {
        private readonly HttpClient _client;

        private RunningSidekick(SidekickProcess process, int port)
        {
            Process = process;
            _client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(60) };
        }

        public SidekickProcess Process { get; }

        public static async Task<RunningSidekick> StartAsync(CacheFixture fixture, GeneratedOrigin origin, string spool)
        {
            var environment = new Dictionary<string, string>
            {
                ["SIDEKICK_CACHE_ENDPOINT"] = fixture.S3.Url.ToString(),
                ["SIDEKICK_CACHE_ACCESS_KEY"] = S3rverProcess.AccessKey,
                ["SIDEKICK_CACHE_SECRET_KEY"] = S3rverProcess.SecretKey,
                ["SIDEKICK_CACHE_BUCKET"] = CacheFixture.Bucket,
                ["SIDEKICK_CACHE_SPOOL_DIR"] = spool,
            };
            var port = SidekickProcess.FreePort();
            var process = SidekickProcess.StartIn(Environment.CurrentDirectory, environment,
                "--address", $"127.0.0.1:{port}", "--health-path", "/health", "--log", "--trace", "", origin.Url.ToString());
            var sidekick = new RunningSidekick(process, port);
            try
            {
                await process.WaitForHealthAsync(port);
                var deadline = Stopwatch.StartNew();
                while (!(await sidekick.StateAsync()).GetProperty("healthy").GetBoolean())
                {
                    if (deadline.Elapsed > TimeSpan.FromSeconds(60))
                    {
                        throw new TimeoutException($"the cache store never came up: {await sidekick.StateAsync()}; {process.Stdout}");
                    }

                    await Task.Delay(50);
                }
            }
            catch
            {
                await sidekick.DisposeAsync();
                throw;
            }

            return sidekick;
        }

        public string Url(string path) => new Uri(_client.BaseAddress!, path).ToString();

        /// <summary>The <c>cache</c> object of /v1/state.</summary>
        public async Task<JsonElement> StateAsync()
        {
            using var document = JsonDocument.Parse(await _client.GetStringAsync("/v1/state"));
            return document.RootElement.GetProperty("cache").Clone();
        }

        public Task<string> MetricsAsync() => _client.GetStringAsync("/.prometheus/metrics");

        /// <summary>
        /// Polls /v1/state until no fill runs and the spool budget is all free, then checks no fill was given up
        /// and that <paramref name="expectedCompleted"/> reached the store. Returns the last state.
        /// </summary>
        public async Task<JsonElement> WaitForFillsAsync(int expectedCompleted)
        {
            var deadline = Stopwatch.StartNew();
            while (true)
            {
                var state = await StateAsync();
                if (state.GetProperty("fillsInFlight").GetInt32() == 0 && state.GetProperty("spoolBytes").GetInt64() == 0)
                {
                    var abandoned = state.GetProperty("fillsAbandoned").EnumerateObject().Where(p => p.Value.GetInt64() != 0).ToArray();
                    Assert.True(abandoned.Length == 0, $"fills were abandoned: {state}; log: {LogTail()}");
                    var completed = Metric(await MetricsAsync(), "sidekick_cache_fills_completed_total");
                    Assert.True(completed == expectedCompleted, $"{completed} fills completed, {expectedCompleted} expected: {state}; log: {LogTail()}");
                    return state;
                }

                if (deadline.Elapsed > Patience)
                {
                    throw new TimeoutException($"the fills were still running after {Patience.TotalSeconds} s: {state}; log: {LogTail()}");
                }

                await Task.Delay(100);
            }
        }

        private string LogTail() => Process.Stdout.Length > 4000 ? Process.Stdout[^4000..] : Process.Stdout;

        public async ValueTask DisposeAsync()
        {
            _client.Dispose();
            await Process.DisposeAsync();
        }
    }

    /// <summary>
    /// Samples a process's resident memory (/proc/PID/status VmRSS) about every 20 ms on its own thread, and
    /// whether a spool file is present, until stopped.
    /// </summary>
    private sealed class RssSampler : IDisposable
    {
        private readonly int _pid;
        private readonly string _spool;
        private readonly Thread _thread;
        private volatile bool _stop;
        private long _peakKb;
        private int _samples;
        private bool _spoolSeen;

        private RssSampler(int pid, string spool)
        {
            _pid = pid;
            _spool = spool;
            _thread = new Thread(Run) { IsBackground = true, Name = "rss sampler" };
        }

        public static RssSampler Start(int pid, string spool)
        {
            var sampler = new RssSampler(pid, spool);
            sampler.Sample();
            sampler._thread.Start();
            return sampler;
        }

        /// <summary>Stops sampling (after one last sample): the peak RSS in KiB, the number of samples, whether a spool file was seen.</summary>
        public (long PeakKb, int Samples, bool SpoolSeen) Stop()
        {
            _stop = true;
            _thread.Join();
            Sample();
            return (_peakKb, _samples, _spoolSeen);
        }

        public void Dispose()
        {
            if (!_stop)
            {
                Stop();
            }
        }

        private void Run()
        {
            while (!_stop)
            {
                Sample();
                Thread.Sleep(20);
            }
        }

        private void Sample()
        {
            foreach (var line in File.ReadLines($"/proc/{_pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    var kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
                    _peakKb = Math.Max(_peakKb, kb);
                    _samples++;
                    break;
                }
            }

            _spoolSeen |= Directory.EnumerateFiles(_spool).Any();
        }
    }
}
