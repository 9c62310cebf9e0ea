using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Xunit.Abstractions;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A real client reading a large object in ranged parts: the AWS CLI's `s3 cp` (8 MiB parts, 10 at a time)
/// through sidekick to an S3 server that verifies every SigV4 signature. The first read's 206 parts make the
/// whole object an entry; the second read gets every part from the cache, each after awscli's own signed
/// request, made conditional by sidekick, came back 304. A logging relay in front of the origin is the
/// origin's request log: what it received, header for header, and what it answered.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class AwsCliRangedReadTests(ITestOutputHelper output)
{
    private const string OriginBucket = "origin";
    private const string Key = "datasets/part-00000.bin";
    private const string ObjectPath = "/" + OriginBucket + "/datasets/part-00000.bin";
    private const int Size = 256 * 1024 * 1024;

    [AwsCliFact]
    public async Task Awscli_reading_256_MiB_in_ranged_parts_twice_gets_the_second_read_from_the_cache_after_304s_only()
    {
        var aws = AwsCli.Program ?? throw new InvalidOperationException(AwsCli.WhyMissing);
        var clock = Stopwatch.StartNew();
        var phases = new List<string>();
        void Phase(string name)
        {
            phases.Add($"{name} {clock.Elapsed.TotalSeconds:F1} s");
            output.WriteLine($"{clock.Elapsed.TotalSeconds,6:F1} s  {name}");
            clock.Restart();
        }

        var work = Directory.CreateTempSubdirectory("sidekick-awscli").FullName;
        var store = new CacheFixture();
        try
        {
            output.WriteLine(await AwsCli.VersionAsync(aws));

            // The origin: SigV4-verifying s3rver holding the object, written straight to it.
            await using var origin = await S3rverProcess.StartVerifyingAsync(Path.Combine(work, "origin"), OriginBucket);
            var (expectedHash, etag) = await StoreObjectAsync(origin.Url);
            using (var forged = OriginClient(origin.Url, "not-the-secret"))
            {
                // The origin really checks signatures: a request signed with the wrong secret is refused.
                var refused = await Assert.ThrowsAsync<AmazonS3Exception>(() => forged.GetObjectMetadataAsync(OriginBucket, Key));
                Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            }

            Phase("origin up, 256 MiB object stored");

            // The origin's request log, then sidekick with the cache in front of it.
            await using var relay = new LoggingRelay(origin.Url);
            await store.InitializeAsync();
            var environment = store.Environment();
            environment.Remove("SIDEKICK_CACHE_MIN_SIZE");
            environment["SIDEKICK_CACHE_SPOOL_DIR"] = Path.Combine(work, "spool");
            var log = new StringWriter();
            var options = SidekickHarness.FastOptions with
            {
                HealthPath = "/", ReadHealthPath = "/", HealthDuration = TimeSpan.FromSeconds(1), Log = true, Trace = "application", TraceExplicit = true,
            };
            var (instance, client) = await store.StartSidekickAsync([relay.Url], options, environment, TextWriter.Synchronized(log));
            await using var running = instance;
            using var admin = client;
            var endpoint = instance.Server.BaseAddress.ToString().TrimEnd('/');
            Phase("sidekick up");

            string Report(string what, int since = 0)
            {
                var text = new StringBuilder(what).Append("\n\norigin log (object requests");
                text.Append(since > 0 ? $" from #{since}" : "").Append("; health probes left out):\n");
                foreach (var exchange in relay.Exchanges.Where(e => e.Sequence >= since && !IsProbe(e)))
                {
                    text.Append("  ").Append(exchange).Append('\n');
                }

                if (relay.Exchanges.LastOrDefault(e => e.Sequence >= since && e.Method == "GET" && e.Field("Range") is not null) is { } sample)
                {
                    text.Append("the last ranged GET as the origin received it:\n  ").Append(sample.RequestHead.TrimEnd().Replace("\r\n", "\n  ", StringComparison.Ordinal))
                        .Append("\nand its answer:\n  ").Append(sample.ResponseHead.TrimEnd().Replace("\r\n", "\n  ", StringComparison.Ordinal)).Append('\n');
                }

                text.Append("relay errors: ").Append(relay.Errors.IsEmpty ? "none" : string.Join("\n", relay.Errors)).Append('\n');
                text.Append("phases: ").Append(string.Join(", ", phases)).Append('\n');
                var sidekickLog = log.ToString().Split('\n').Where(l => l.Contains("LOG", StringComparison.Ordinal) || l.Contains("part-00000", StringComparison.Ordinal)).TakeLast(80);
                text.Append("sidekick log and trace (last 80 lines about the object):\n  ").Append(string.Join("\n  ", sidekickLog)).Append('\n');
                return text.ToString();
            }

            // First read: every part from the origin, once.
            var first = Path.Combine(work, "first.bin");
            var firstRun = await AwsCli.CopyAsync(aws, endpoint, $"s3://{OriginBucket}/{Key}", first, work);
            Phase("first read");
            Assert.True(firstRun.ExitCode == 0, Report($"the first `aws s3 cp` failed (exit {firstRun.ExitCode}): {firstRun.Stderr}"));
            Assert.True(expectedHash == await HashAsync(first), Report("the first read's bytes differ from the object's"));
            var firstRead = Answered(relay.Exchanges.Where(e => !IsProbe(e)).ToList(), what => Report(what));
            Assert.True(firstRead.All(e => e.Target == ObjectPath && e.Method is "GET" or "HEAD"), Report("awscli asked the origin for something else than the object"));
            Assert.True(firstRead.All(e => e.Field("Authorization")?.StartsWith("AWS4-HMAC-SHA256 ", StringComparison.Ordinal) == true),
                Report("a request reached the origin without awscli's SigV4 signature"));
            Assert.True(firstRead.All(e => e.Status is 200 or 206), Report("the origin refused or failed a request of the first read (403: a signature it did not accept; 0: no answer): " +
                string.Join("; ", firstRead.Where(e => e.Status is not (200 or 206)))));
            var firstGets = firstRead.Where(e => e.Method == "GET").ToList();
            Assert.True(firstGets.Count > 1 && firstGets.All(e => e.Field("Range") is not null), Report("awscli did not read the object in ranged parts"));
            Assert.True(firstGets.Sum(e => e.ResponseBodyBytes) == Size, Report($"the origin sent {firstGets.Sum(e => e.ResponseBodyBytes)} body bytes for a {Size}-byte object: not each byte once"));

            // The parts become one entry: wait until no fill runs and no spool space is held any more.
            var metrics = await WaitForFillsToSettleAsync(admin);
            Phase("fill settled");
            Assert.True(Metric(metrics, "sidekick_cache_fills_completed_total") >= 1, Report(
                "the first read's ranged parts did not become a cache entry (no fill completed):\n" + CacheMetricLines(metrics)));

            // Second read: the origin is only asked to confirm, and answers 304 to every request.
            var mark = relay.Mark();
            var second = Path.Combine(work, "second.bin");
            var secondRun = await AwsCli.CopyAsync(aws, endpoint, $"s3://{OriginBucket}/{Key}", second, work);
            Phase("second read");
            var after = await admin.GetStringAsync("/.prometheus/metrics");
            string SecondReport(string what) => Report(what + "\n" + CacheMetricLines(after), mark);
            Assert.True(secondRun.ExitCode == 0, SecondReport($"the second `aws s3 cp` failed (exit {secondRun.ExitCode}): {secondRun.Stderr}"));
            Assert.True(expectedHash == await HashAsync(second), SecondReport("the second read's bytes differ from the object's"));
            var secondRead = Answered(relay.Since(mark).Where(e => !IsProbe(e)).ToList(), SecondReport);
            Assert.True(secondRead.Any(e => e.Method == "GET"), SecondReport("no GET of the second read reached the origin: an entry filled with credentials was served without the requester's own conditional request"));
            Assert.True(secondRead.All(e => e.Target == ObjectPath && e.Method is "GET" or "HEAD"), SecondReport("the second read asked the origin for something else than the object"));
            Assert.True(secondRead.All(e => IsConditionalOn(e, etag)), SecondReport($"a request of the second read reached the origin without If-None-Match: {etag} (or If-Modified-Since)"));
            Assert.True(secondRead.All(e => e.Field("Authorization")?.StartsWith("AWS4-HMAC-SHA256 ", StringComparison.Ordinal) == true),
                SecondReport("a conditional request went to the origin without the requester's own signature"));
            Assert.True(secondRead.All(e => e.Status == 304 && e.ResponseBodyBytes == 0), SecondReport("the origin sent a body (or refused) on the second read: not served from the cache"));
            var firstRanges = firstGets.Select(e => e.Field("Range")).Order(StringComparer.Ordinal).ToList();
            var secondRanges = secondRead.Where(e => e.Method == "GET").Select(e => e.Field("Range")).Order(StringComparer.Ordinal).ToList();
            Assert.True(firstRanges.SequenceEqual(secondRanges), SecondReport("each ranged GET of the second read should have been confirmed with its own Range kept"));

            output.WriteLine(Report("passed", mark));
            output.WriteLine("first read, from the origin:\n  " + string.Join("\n  ", firstRead));
        }
        finally
        {
            await store.DisposeAsync();
            TryDelete(store.DataDirectory);
            TryDelete(work);
        }
    }

    /// <summary>
    /// The exchanges the origin answered. A request sent on a kept-alive connection just as the origin
    /// closed it gets no answer, and sidekick sends it again on a fresh connection (RFC 9110 §9.2.2): that
    /// is allowed, a request that was never resent is not.
    /// </summary>
    private static List<RelayedExchange> Answered(List<RelayedExchange> exchanges, Func<string, string> report)
    {
        foreach (var lost in exchanges.Where(e => e.Status == 0))
        {
            Assert.True(exchanges.Any(e => e.Sequence > lost.Sequence && e.Status != 0 && e.Connection != lost.Connection && e.Method == lost.Method && e.Field("Range") == lost.Field("Range")),
                report($"#{lost.Sequence} got no answer from the origin and was not sent again"));
        }

        return exchanges.Where(e => e.Status != 0).ToList();
    }

    /// <summary>Random bytes PUT straight to the origin (one PUT: the ETag is the body's MD5); their SHA-256 and the ETag.</summary>
    private static async Task<(string Hash, string ETag)> StoreObjectAsync(Uri origin)
    {
        var body = new byte[Size];
        RandomNumberGenerator.Fill(body);
        using var s3 = OriginClient(origin, S3rverProcess.SecretKey);
        var put = await s3.PutObjectAsync(new PutObjectRequest
        {
            BucketName = OriginBucket, Key = Key, InputStream = new MemoryStream(body, writable: false), UseChunkEncoding = false,
        });
        return (Convert.ToHexString(SHA256.HashData(body)), put.ETag);
    }

    internal static AmazonS3Client OriginClient(Uri url, string secret) => new(
        new BasicAWSCredentials(S3rverProcess.AccessKey, secret),
        new AmazonS3Config
        {
            ServiceURL = url.ToString(),
            ForcePathStyle = true,
            AuthenticationRegion = "us-east-1",
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            Timeout = TimeSpan.FromMinutes(2),
        });

    /// <summary>sidekick's health probes (GET /) are not client requests.</summary>
    internal static bool IsProbe(RelayedExchange exchange) => exchange.Target == "/";

    internal static bool IsConditionalOn(RelayedExchange exchange, string etag) =>
        exchange.Field("If-None-Match")?.Split(',').Select(t => t.Trim()).Contains(etag, StringComparer.Ordinal) == true
        || exchange.Field("If-Modified-Since") is not null;

    internal static async Task<string> HashAsync(string path)
    {
        await using var file = File.OpenRead(path);
        return Convert.ToHexString(await SHA256.HashDataAsync(file));
    }

    /// <summary>
    /// Polls /.prometheus/metrics until a fill completed or was abandoned, or nothing is being filled (no fill
    /// in flight, no spool space reserved): the last is where the current code stops, having stored nothing.
    /// </summary>
    internal static async Task<string> WaitForFillsToSettleAsync(HttpClient admin)
    {
        var deadline = Environment.TickCount64 + 90_000;
        while (true)
        {
            var metrics = await admin.GetStringAsync("/.prometheus/metrics");
            if (Metric(metrics, "sidekick_cache_fills_completed_total") >= 1
                || Metric(metrics, "sidekick_cache_fills_abandoned_total") >= 1
                || (Metric(metrics, "sidekick_cache_fills_in_flight") == 0 && Metric(metrics, "sidekick_cache_spool_bytes") == 0))
            {
                return metrics;
            }

            if (Environment.TickCount64 > deadline)
            {
                throw new TimeoutException("the fill of the entry neither completed nor stopped within 90 s:\n" + CacheMetricLines(metrics));
            }

            await Task.Delay(50);
        }
    }

    /// <summary>The sum of a metric's samples (all label sets).</summary>
    internal static double Metric(string exposition, string name) => exposition.Split('\n')
        .Where(l => l.StartsWith(name, StringComparison.Ordinal) && l.Length > name.Length && l[name.Length] is ' ' or '{')
        .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture));

    internal static string CacheMetricLines(string exposition) =>
        "cache metrics: " + string.Join(", ", exposition.Split('\n').Where(l => l.StartsWith("sidekick_cache_", StringComparison.Ordinal) && !l.EndsWith(" 0", StringComparison.Ordinal)));

    internal static void TryDelete(string directory)
    {
        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>The `aws` program on PATH and how the test runs it.</summary>
    internal static class AwsCli
    {
        public const string WhyMissing = "the AWS CLI (`aws`) is not on PATH: scripts/test.sh installs it (apt-get install awscli)";

        public static string? Program { get; } = OnPath("aws");

        /// <summary>The program called <paramref name="name"/> in the first PATH directory that has one, or null.</summary>
        public static string? OnPath(string name) => (Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, name))
            .FirstOrDefault(File.Exists);

        /// <summary>In CI a missing `aws` fails the test; elsewhere it is skipped with the reason.</summary>
        public static bool InCi => Environment.GetEnvironmentVariable("CI") is { Length: > 0 } ci && ci != "false" && ci != "0";

        public static async Task<string> VersionAsync(string aws) => (await RunAsync(aws, ["--version"], null)).Stdout.Trim();

        /// <summary>`aws s3 cp` from <paramref name="source"/> to <paramref name="target"/> through <paramref name="endpoint"/>.</summary>
        public static Task<(int ExitCode, string Stdout, string Stderr)> CopyAsync(string aws, string endpoint, string source, string target, string work)
        {
            // Path-style addressing and the region from a config file of the test's own; nothing from the
            // user's ~/.aws, no proxy, no instance metadata lookups. Transfer settings are awscli's defaults
            // (8 MiB parts, 10 requests at a time).
            var config = Path.Combine(work, "aws-config");
            File.WriteAllText(config, "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n");
            var environment = new Dictionary<string, string?>
            {
                ["AWS_CONFIG_FILE"] = config,
                ["AWS_SHARED_CREDENTIALS_FILE"] = Path.Combine(work, "no-credentials"),
                ["AWS_ACCESS_KEY_ID"] = S3rverProcess.AccessKey,
                ["AWS_SECRET_ACCESS_KEY"] = S3rverProcess.SecretKey,
                ["AWS_DEFAULT_REGION"] = "us-east-1",
                ["AWS_EC2_METADATA_DISABLED"] = "true",
                ["AWS_PAGER"] = "",
                ["NO_PROXY"] = "127.0.0.1,localhost",
            };
            return RunAsync(aws, ["s3", "cp", source, target, "--endpoint-url", endpoint, "--only-show-errors", "--no-progress"], environment);
        }

        /// <summary>Runs an S3 client with only the given environment's AWS_ variables and no proxy, 3 minutes at most.</summary>
        internal static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string aws, string[] arguments, Dictionary<string, string?>? environment)
        {
            var start = new ProcessStartInfo(aws) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var argument in arguments)
            {
                start.ArgumentList.Add(argument);
            }

            foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("AWS_", StringComparison.Ordinal) || k.EndsWith("_proxy", StringComparison.OrdinalIgnoreCase)).ToList())
            {
                start.Environment.Remove(name);
            }

            foreach (var (name, value) in environment ?? [])
            {
                start.Environment[name] = value;
            }

            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException($"`{Path.GetFileName(aws)} {string.Join(' ', arguments)}` did not finish within 3 minutes: {await stderr}");
            }

            return (process.ExitCode, await stdout, await stderr);
        }
    }
}

/// <summary>A test that drives the AWS CLI: skipped without `aws` on PATH, except in CI (CI=true), where that fails it.</summary>
public sealed class AwsCliFactAttribute : FactAttribute
{
    public AwsCliFactAttribute() =>
        Skip = AwsCliRangedReadTests.AwsCli.Program is null && !AwsCliRangedReadTests.AwsCli.InCi ? AwsCliRangedReadTests.AwsCli.WhyMissing : null;
}
