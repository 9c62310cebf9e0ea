using Amazon.Runtime;
using Amazon.S3;
using Sidekick.Cli;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Caching;

/// <summary>A real s3rver for the cache, and a way to start sidekick with the cache pointed at it.</summary>
public sealed class CacheFixture : IAsyncLifetime
{
    public const string Bucket = "cache";

    /// <summary>The bucket's folder every sidekick of these tests keeps its entries in (SIDEKICK_CACHE_NAMESPACE).</summary>
    public const string Namespace = "tests";

    private S3rverProcess? _s3;

    internal S3rverProcess S3 => _s3!;

    public string DataDirectory { get; } = Directory.CreateTempSubdirectory("sidekick-cache").FullName;

    public async Task InitializeAsync() => _s3 = await S3rverProcess.StartAsync(DataDirectory, Bucket);

    public async Task DisposeAsync()
    {
        if (_s3 is not null)
        {
            await _s3.DisposeAsync();
        }

        // The large-object tests leave gigabytes here.
        try
        {
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>
    /// Waits for <paramref name="condition"/> (fills and uploads finish on their own time), failing after a minute
    /// with what was awaited and the store's state: a fill that never lands because s3rver died says so.
    /// </summary>
    /// <param name="cache">When given, its counters that are not zero are added to the failure (why a fill never landed).</param>
    internal async Task Eventually(Func<bool> condition, string what, Sidekick.Caching.ResponseCache? cache = null)
    {
        try
        {
            await Tests.Eventually.WaitUntilAsync(condition, 60_000, what);
        }
        catch (TimeoutException timeout)
        {
            var counters = "";
            if (cache is not null)
            {
                var text = new System.Text.StringBuilder();
                cache.Metrics.WriteTo(text, cache.Health.Online, cache.FillsInFlight, cache.Fills);
                counters = "; cache: " + string.Join(", ", text.ToString().Split('\n')
                    .Where(line => line.Length > 0 && line[0] != '#' && !line.EndsWith(" 0", StringComparison.Ordinal)));
            }

            throw new TimeoutException($"{timeout.Message} (s3rver {S3.State}{counters})", timeout);
        }
    }

    internal AmazonS3Client Client() => new(
        new BasicAWSCredentials(S3rverProcess.AccessKey, S3rverProcess.SecretKey),
        new AmazonS3Config { ServiceURL = S3.Url.ToString(), ForcePathStyle = true, AuthenticationRegion = "us-east-1" });

    internal Dictionary<string, string?> Environment(Uri? endpoint = null) => new()
    {
        ["SIDEKICK_CACHE_ENDPOINT"] = (endpoint ?? S3.Url).ToString(),
        ["SIDEKICK_CACHE_ACCESS_KEY"] = S3rverProcess.AccessKey,
        ["SIDEKICK_CACHE_SECRET_KEY"] = S3rverProcess.SecretKey,
        ["SIDEKICK_CACHE_BUCKET"] = Bucket,
        ["SIDEKICK_CACHE_MIN_SIZE"] = "1KiB",
        ["SIDEKICK_CACHE_HEALTH_DURATION"] = "1s",
        ["SIDEKICK_CACHE_NAMESPACE"] = Namespace,
    };

    /// <summary>The bucket object holding <paramref name="key"/> for a sidekick started with <see cref="Environment"/>.</summary>
    internal static string ObjectName(string key) => $"{Namespace}/{key}";

    internal Task<(SidekickInstance Instance, HttpClient Client)> StartSidekickAsync(CacheTestBackend backend, Dictionary<string, string?>? environment = null, TimeProvider? time = null) =>
        StartSidekickAsync([backend.Url], SidekickHarness.FastOptions, environment, time: time);

    /// <summary>One site of <paramref name="backends"/>, with <paramref name="options"/> for everything but the address.</summary>
    internal Task<(SidekickInstance Instance, HttpClient Client)> StartSidekickAsync(
        CacheTestBackend[] backends, SidekickOptions options, Dictionary<string, string?>? environment = null) =>
        StartSidekickAsync(backends.Select(b => b.Url).ToArray(), options, environment);

    /// <summary>One site of backends at <paramref name="urls"/>; <paramref name="stdout"/> receives logs and traces, <paramref name="stderr"/> problems.</summary>
    internal async Task<(SidekickInstance Instance, HttpClient Client)> StartSidekickAsync(
        Uri[] urls, SidekickOptions options, Dictionary<string, string?>? environment = null, TextWriter? stdout = null, TextWriter? stderr = null, TimeProvider? time = null)
    {
        var port = SidekickProcess.FreePort();
        options = options with { Address = $"127.0.0.1:{port}", Sites = [string.Join(",", urls.Select(u => u.ToString().TrimEnd('/')))] };
        var instance = SidekickApp.Create(options, new SidekickSeams
        {
            Stdout = stdout ?? TextWriter.Null, Stderr = stderr ?? TextWriter.Null, Environment = environment ?? Environment(), StdoutIsTerminal = false, Time = time,
        });
        await instance.Server.StartAsync();
        var deadline = System.Environment.TickCount64 + 15000;
        while (instance.Server.Topology.Current.ActiveSite is null || !instance.Server.Cache!.Health.Online)
        {
            if (System.Environment.TickCount64 > deadline)
            {
                throw new TimeoutException($"sidekick or its cache store did not come up: site={instance.Server.Topology.Current.ActiveSite?.Number}, store online={instance.Server.Cache?.Health.Online}, s3rver {S3.State}");
            }

            await Task.Delay(25);
        }

        return (instance, new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromMinutes(2) });
    }
}
