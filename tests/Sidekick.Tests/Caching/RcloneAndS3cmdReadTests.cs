using System.Security.Cryptography;
using Amazon.S3.Model;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Xunit.Abstractions;
using static Sidekick.Tests.Caching.AwsCliRangedReadTests;

namespace Sidekick.Tests.Caching;

/// <summary>
/// The two clients the cache issue saw read a 48 MB object four times without it ever landing in the cache bucket:
/// rclone (four parallel ranged streams) and s3cmd (one whole GET), each reading the object twice through sidekick
/// with the cache at its defaults, from an S3 server that verifies every SigV4 signature. The first read fills the
/// entry (rclone's ranges are combined into it), the second gets every byte from the cache after the client's own
/// signed request, made conditional by sidekick, came back 304. The relay in front of the origin is its request log.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class RcloneAndS3cmdReadTests(ITestOutputHelper output)
{
    private const string OriginBucket = "data";
    private const string Key = "tables/part-00001.parquet";
    private const string ObjectPath = "/" + OriginBucket + "/" + Key;
    private const int Size = 48_000_000;

    [S3ClientTheory]
    [InlineData("rclone")]
    [InlineData("s3cmd")]
    public async Task Reading_48_MB_twice_gets_the_second_read_from_the_cache_after_304s_only(string client)
    {
        var program = AwsCli.OnPath(client) ?? throw new InvalidOperationException(S3Clients.WhyMissing(client));
        var work = Directory.CreateTempSubdirectory("sidekick-" + client).FullName;
        var store = new CacheFixture();
        try
        {
            await using var origin = await S3rverProcess.StartVerifyingAsync(Path.Combine(work, "origin"), OriginBucket);
            var expectedHash = await StoreObjectAsync(origin.Url);
            await using var relay = new LoggingRelay(origin.Url);
            await store.InitializeAsync();
            var environment = store.Environment();
            environment.Remove("SIDEKICK_CACHE_MIN_SIZE"); // the defaults
            environment["SIDEKICK_CACHE_SPOOL_DIR"] = Path.Combine(work, "spool");
            var options = SidekickHarness.FastOptions with { HealthPath = "/", ReadHealthPath = "/", HealthDuration = TimeSpan.FromSeconds(1) };
            var (instance, admin) = await store.StartSidekickAsync([relay.Url], options, environment);
            await using var running = instance;
            using var adminClient = admin;
            var endpoint = instance.Server.BaseAddress;

            string Log(string what, int since = 0) => what + "\norigin log (health probes left out):\n  " +
                string.Join("\n  ", relay.Since(since).Where(e => !IsProbe(e))) + "\nrelay errors: " + (relay.Errors.IsEmpty ? "none" : string.Join("\n", relay.Errors));

            var first = Path.Combine(work, "first.bin");
            var firstRun = await S3Clients.ReadAsync(client, program, endpoint, ObjectPath, first, work);
            Assert.True(firstRun.ExitCode == 0, Log($"the first {client} read failed (exit {firstRun.ExitCode}): {firstRun.Stderr}"));
            Assert.True(expectedHash == await HashAsync(first), Log($"the first {client} read's bytes differ from the object's"));
            var firstGets = relay.Exchanges.Where(e => !IsProbe(e) && e.Method == "GET").ToList();
            Assert.True(firstGets.Sum(e => e.ResponseBodyBytes) == Size, Log($"the origin sent {firstGets.Sum(e => e.ResponseBodyBytes)} body bytes for a {Size}-byte object"));
            if (client == "rclone")
            {
                Assert.True(firstGets.Count > 1 && firstGets.All(e => e.Field("Range") is not null), Log("rclone did not read the object in parallel ranges"));
            }

            var metrics = await WaitForFillsToSettleAsync(adminClient);
            Assert.True(Metric(metrics, "sidekick_cache_fills_completed_total") >= 1, Log("the first read did not become a cache entry:\n" + CacheMetricLines(metrics)));

            var mark = relay.Mark();
            var second = Path.Combine(work, "second.bin");
            var secondRun = await S3Clients.ReadAsync(client, program, endpoint, ObjectPath, second, work);
            var after = await adminClient.GetStringAsync("/.prometheus/metrics");
            string SecondLog(string what) => Log(what + "\n" + CacheMetricLines(after), mark);
            Assert.True(secondRun.ExitCode == 0, SecondLog($"the second {client} read failed (exit {secondRun.ExitCode}): {secondRun.Stderr}"));
            Assert.True(expectedHash == await HashAsync(second), SecondLog($"the second {client} read's bytes differ from the object's"));
            var secondRead = relay.Since(mark).Where(e => !IsProbe(e)).ToList();
            Assert.True(secondRead.Any(e => e.Method == "GET"), SecondLog("no GET of the second read reached the origin: the requester's own conditional request was skipped"));
            Assert.True(secondRead.All(e => e.Target == ObjectPath && e.Field("Authorization")?.StartsWith("AWS4-HMAC-SHA256 ", StringComparison.Ordinal) == true),
                SecondLog("a request of the second read reached the origin for something else, or without the client's signature"));
            Assert.True(secondRead.All(e => e.Field("If-None-Match") is not null || e.Field("If-Modified-Since") is not null), SecondLog("an unconditional request of the second read reached the origin"));
            Assert.True(secondRead.All(e => e.Status == 304 && e.ResponseBodyBytes == 0), SecondLog("the origin sent a body (or refused) on the second read: not served from the cache"));
            Assert.True(Metric(after, "sidekick_cache_served_bytes_total") >= Size, SecondLog("the cache served fewer bytes than the object"));
            output.WriteLine(Log("passed"));
        }
        finally
        {
            await store.DisposeAsync();
            TryDelete(store.DataDirectory);
            TryDelete(work);
        }
    }

    /// <summary>Random bytes PUT straight to the origin; their SHA-256.</summary>
    private static async Task<string> StoreObjectAsync(Uri origin)
    {
        var body = new byte[Size];
        RandomNumberGenerator.Fill(body);
        using var s3 = OriginClient(origin, S3rverProcess.SecretKey);
        await s3.PutObjectAsync(new PutObjectRequest
        {
            BucketName = OriginBucket, Key = Key, InputStream = new MemoryStream(body, writable: false), UseChunkEncoding = false,
        });
        return Convert.ToHexString(SHA256.HashData(body));
    }

    /// <summary>rclone and s3cmd as users run them: their own config file naming sidekick as the endpoint, path-style, SigV4.</summary>
    internal static class S3Clients
    {
        public static string WhyMissing(string name) => $"`{name}` is not on PATH: scripts/test.sh installs it (apt-get install {name})";

        public static Task<(int ExitCode, string Stdout, string Stderr)> ReadAsync(string client, string program, Uri endpoint, string path, string target, string work)
        {
            var bucketAndKey = path.TrimStart('/');
            var host = $"{endpoint.Host}:{endpoint.Port}";
            if (client == "rclone")
            {
                var config = Path.Combine(work, "rclone.conf");
                File.WriteAllText(config, $"[sk]\ntype = s3\nprovider = Other\naccess_key_id = {S3rverProcess.AccessKey}\nsecret_access_key = {S3rverProcess.SecretKey}\n" +
                    $"endpoint = http://{host}\nregion = us-east-1\nforce_path_style = true\n");
                // Four ranged streams for anything above 8 MiB, as rclone reads large objects by default from 1.6x on (here set, not left to the version).
                return AwsCli.RunAsync(program, ["--config", config, "copyto", "sk:" + bucketAndKey, target, "--multi-thread-streams", "4", "--multi-thread-cutoff", "8M"], null);
            }

            var s3cfg = Path.Combine(work, "s3cfg");
            File.WriteAllText(s3cfg, $"[default]\naccess_key = {S3rverProcess.AccessKey}\nsecret_key = {S3rverProcess.SecretKey}\nhost_base = {host}\nhost_bucket = {host}\n" +
                "use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n");
            return AwsCli.RunAsync(program, ["-c", s3cfg, "--force", "get", "s3://" + bucketAndKey, target], new Dictionary<string, string?> { ["HOME"] = work });
        }
    }
}

/// <summary>A test that drives rclone or s3cmd: skipped without them on PATH, except in CI (CI=true), where that fails it.</summary>
public sealed class S3ClientTheoryAttribute : TheoryAttribute
{
    public S3ClientTheoryAttribute() =>
        Skip = (AwsCliRangedReadTests.AwsCli.OnPath("rclone") is null || AwsCliRangedReadTests.AwsCli.OnPath("s3cmd") is null) && !AwsCliRangedReadTests.AwsCli.InCi
            ? "rclone or s3cmd is not on PATH: scripts/test.sh installs them (apt-get install rclone s3cmd)"
            : null;
}
