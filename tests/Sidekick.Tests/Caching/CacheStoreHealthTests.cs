using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;
using Amazon.Runtime;
using Amazon.S3;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Caching;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Sidekick.Tests.Observability;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A cache store that cannot be used says so: each failure (unreachable, credentials rejected, bucket missing) and
/// the recovery is one log line with the reason, /v1/state has a cache section, and store errors are counted by
/// reason. Against a real s3rver (and a port where nothing listens); requests are served meanwhile, bypassing the cache.
/// </summary>
public sealed class CacheStoreHealthTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    [Fact]
    public async Task An_unreachable_store_is_one_line_a_state_section_and_errors_counted_as_unreachable()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var nothing = new Uri($"http://127.0.0.1:{SidekickProcess.FreePort()}");
        await using var sidekick = await RunningSidekick.StartAsync(backend, Fast(fixture.Environment(nothing)), json: false);
        var metrics = sidekick.Cache.Metrics;
        await sidekick.WaitUntilAsync(() => metrics.StoreErrorsOf(CacheStoreFailureReason.Unreachable) >= 3, "three failed probes of the store");
        await sidekick.WaitUntilAsync(() => sidekick.CacheLines().Length > 0, "the line (the log is written by its own thread)");

        var line = Assert.Single(sidekick.CacheLines());
        Assert.Matches(new Regex(@"^LOG  : \d\d:\d\d:\d\d\.\d{3}  cache store " + Regex.Escape(nothing.ToString().TrimEnd('/')) +
                                 " bucket cache unreachable: connection refused$"), line);

        var cache = await sidekick.StateCacheAsync();
        Assert.Equal(nothing.ToString().TrimEnd('/'), cache.GetProperty("endpoint").GetString());
        Assert.Equal(CacheFixture.Bucket, cache.GetProperty("bucket").GetString());
        Assert.False(cache.GetProperty("healthy").GetBoolean());
        Assert.Equal(0, cache.GetProperty("fillsInFlight").GetInt32());
        Assert.Equal("unreachable", cache.GetProperty("lastError").GetProperty("reason").GetString());
        Assert.Equal("connection refused", cache.GetProperty("lastError").GetProperty("message").GetString());
        Assert.True(cache.GetProperty("lastError").TryGetProperty("at", out _));

        var text = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.Matches(new Regex("^sidekick_cache_store_errors_total\\{reason=\"unreachable\"\\} ([3-9]|\\d\\d+)$", RegexOptions.Multiline), text);
        Assert.Contains("sidekick_cache_store_errors_total{reason=\"credentials_rejected\"} 0\n", text, StringComparison.Ordinal);
        Assert.Contains("sidekick_cache_store_up 0\n", text, StringComparison.Ordinal);
        Assert.Contains("sidekick_cache_fills_in_flight 0\n", text, StringComparison.Ordinal);
        await MetricsAndTableTests.PromtoolAsync(text);

        // The backends still serve, around the cache.
        using var response = await sidekick.Client.GetAsync("/x");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("BYPASS", response.Headers.GetValues(ResponseCache.CacheHeader).Single());
    }

    [Fact]
    public async Task Rejected_credentials_are_one_line_naming_the_stores_answer()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var environment = Fast(fixture.Environment());
        environment["SIDEKICK_CACHE_ACCESS_KEY"] = "NOT-A-KEY";
        await using var sidekick = await RunningSidekick.StartAsync(backend, environment, json: false);
        var metrics = sidekick.Cache.Metrics;
        await sidekick.WaitUntilAsync(() => metrics.StoreErrorsOf(CacheStoreFailureReason.CredentialsRejected) >= 3, "three probes refused by the store");
        await sidekick.WaitUntilAsync(() => sidekick.CacheLines().Length > 0, "the line (the log is written by its own thread)");

        var line = Assert.Single(sidekick.CacheLines());
        Assert.EndsWith(
            $"  cache store {fixture.S3.Url.ToString().TrimEnd('/')} bucket cache credentials rejected: " +
            "InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records.", line, StringComparison.Ordinal);
        var cache = await sidekick.StateCacheAsync();
        Assert.False(cache.GetProperty("healthy").GetBoolean());
        Assert.Equal("credentials_rejected", cache.GetProperty("lastError").GetProperty("reason").GetString());
        Assert.Equal(0, metrics.StoreErrorsOf(CacheStoreFailureReason.Unreachable));
        var text = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.DoesNotContain("sidekick_cache_store_errors_total{reason=\"credentials_rejected\"} 0\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_bucket_that_goes_missing_and_comes_back_is_a_line_each_way_in_json()
    {
        var bucket = $"health-{Guid.NewGuid():N}"[..20];
        using var s3 = fixture.Client();
        await s3.PutBucketAsync(bucket);
        await using var backend = await TestBackend.StartAsync("a");
        var environment = Fast(fixture.Environment());
        environment["SIDEKICK_CACHE_BUCKET"] = bucket;
        await using var sidekick = await RunningSidekick.StartAsync(backend, environment, json: true);
        await sidekick.WaitUntilAsync(() => sidekick.Cache.Health.Online, "the first good probe");
        // Once the store answers, the sidecar learns its way with If-None-Match with a probe object it then removes:
        // a bucket deleted before that is not empty.
        await sidekick.WaitUntilAsync(() => sidekick.Cache.Leases.HonoursConditionalWrites is not null, "the store's way learned");

        await s3.DeleteBucketAsync(bucket);
        await sidekick.WaitUntilAsync(() => !sidekick.Cache.Health.Online, "a probe that finds no bucket");
        var missing = await sidekick.StateCacheAsync();
        Assert.False(missing.GetProperty("healthy").GetBoolean());
        Assert.Equal("bucket_missing", missing.GetProperty("lastError").GetProperty("reason").GetString());
        Assert.StartsWith("NoSuchBucket", missing.GetProperty("lastError").GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.True(sidekick.Cache.Metrics.StoreErrorsOf(CacheStoreFailureReason.BucketMissing) >= 1);

        await s3.PutBucketAsync(bucket);
        await sidekick.WaitUntilAsync(() => sidekick.Cache.Health.Online, "a good probe after the bucket came back");
        await sidekick.WaitUntilAsync(() => sidekick.CacheLines().Length == 3, "the recovery's line");

        var lines = sidekick.CacheLines().Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.All(lines, l =>
        {
            Assert.Equal("LOG", l.GetProperty("Type").GetString());
            Assert.Equal(fixture.S3.Url.ToString().TrimEnd('/'), l.GetProperty("Cache").GetString());
            Assert.Equal(bucket, l.GetProperty("Bucket").GetString());
            Assert.True(l.TryGetProperty("Timestamp", out _));
        });
        Assert.Equal("healthy", lines[0].GetProperty("Status").GetString());
        Assert.Equal("unhealthy", lines[1].GetProperty("Status").GetString());
        Assert.Equal("bucket_missing", lines[1].GetProperty("Reason").GetString());
        Assert.StartsWith("NoSuchBucket: ", lines[1].GetProperty("Error").GetString(), StringComparison.Ordinal);
        Assert.Equal("healthy", lines[2].GetProperty("Status").GetString());
        Assert.True(lines[2].GetProperty("Downtime").GetInt64() > 0);

        // Healthy again, and the last error is still there to explain what happened.
        var recovered = await sidekick.StateCacheAsync();
        Assert.True(recovered.GetProperty("healthy").GetBoolean());
        Assert.Equal("bucket_missing", recovered.GetProperty("lastError").GetProperty("reason").GetString());
        Assert.Contains("sidekick_cache_store_up 1\n", await sidekick.Client.GetStringAsync("/.prometheus/metrics"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_first_request_after_start_uses_a_healthy_store_rather_than_bypassing_it()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/first.bin", 4096);
        var port = SidekickProcess.FreePort();
        // The backend is taken as up from the start, so that only the store's first probe could make this a BYPASS.
        var options = SidekickHarness.FastOptions with { Address = $"127.0.0.1:{port}", Sites = [backend.Url.ToString().TrimEnd('/')] };
        await using var instance = SidekickApp.Create(options, new SidekickSeams
        {
            Stdout = TextWriter.Null, Stderr = TextWriter.Null, Environment = fixture.Environment(), StdoutIsTerminal = false,
        });
        await instance.Server.StartAsync();
        Assert.True(instance.Server.Cache!.Health.Online, "the listener opened before the store's first probe answered");

        using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
        using var response = await client.GetAsync("/bucket/first.bin");
        Assert.NotEqual("BYPASS", response.Headers.GetValues("X-Cache").Single());
    }

    [Fact]
    public async Task A_store_operation_that_failed_is_followed_by_a_probe_within_seconds_not_at_the_next_scheduled_one()
    {
        using var probed = await ProbedHealthAsync();
        var (time, metrics, health) = (probed.Time, probed.Metrics, probed.Health);

        // One lookup slower than the store timeout: bypassed at once, and probed again after a second of the fake
        // clock, well before the minute of the probe interval.
        health.MarkOffline(new TimeoutException("no answer in time"));
        Assert.False(health.Online);
        var started = time.GetUtcNow();
        while (!health.Online && time.GetUtcNow() - started < TimeSpan.FromSeconds(30))
        {
            time.Advance(TimeSpan.FromMilliseconds(100));
            await Task.Delay(5); // lets the probe on s3rver answer; the outcome depends on the fake clock only
        }

        Assert.True(health.Online, $"still offline {(time.GetUtcNow() - started).TotalSeconds:0.0} s (fake) after the failure");
    }

    [Fact]
    public async Task Lookups_that_time_out_now_and_then_keep_the_store_and_three_within_ten_seconds_take_it_offline()
    {
        using var probed = await ProbedHealthAsync();
        var (time, metrics, health) = (probed.Time, probed.Metrics, probed.Health);
        var slow = new OperationCanceledException();
        var timeout = TimeSpan.FromSeconds(2);

        // A loaded store: two lookups time out, then two more once the window has passed the first two. Each slow
        // one is counted and is the last error, and the store stays in use.
        health.LookupFailed(slow, timeout);
        time.Advance(TimeSpan.FromSeconds(1));
        health.LookupFailed(slow, timeout);
        time.Advance(CacheHealth.SlowLookupWindow + TimeSpan.FromSeconds(1));
        health.LookupFailed(slow, timeout);
        health.LookupFailed(slow, timeout);
        Assert.True(health.Online);
        Assert.Equal(4, metrics.StoreErrorsOf(CacheStoreFailureReason.Timeout));
        Assert.Equal((CacheStoreFailureReason.Timeout, "no answer within 2s"), (health.Snapshot().LastError!.Reason, health.Snapshot().LastError!.Detail));

        // The third within the window: a store that answers too few lookups in time, whatever it answered in between.
        time.Advance(CacheHealth.SlowLookupWindow - TimeSpan.FromSeconds(1));
        health.LookupFailed(slow, timeout);
        Assert.False(health.Online);
        Assert.Equal(5, metrics.StoreErrorsOf(CacheStoreFailureReason.Timeout));
    }

    [Fact]
    public async Task A_lookup_the_busy_store_answered_too_late_bypasses_only_its_own_request()
    {
        // Through the process, with a store whose lookups wait (as s3rver's did while it took a large upload): the
        // request whose lookup timed out goes to the origin, and the next one still uses the cache.
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/first.bin", 64 * 1024, "max-age=300");
        var second = backend.Put("/bucket/second.bin", 64 * 1024, "max-age=300");
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(relay.Url));
        await using var running = instance;
        var cache = instance.Server.Cache!;

        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.EntryLookupsWaitFor = held.Task;
        using (var slow = await client.GetAsync("/bucket/first.bin"))
        {
            Assert.Equal(HttpStatusCode.OK, slow.StatusCode);
            Assert.Equal("BYPASS", slow.Headers.GetValues("X-Cache").Single());
        }

        relay.EntryLookupsWaitFor = null;
        held.SetResult();
        Assert.True(cache.Health.Online, "one slow lookup took the store offline");
        Assert.Equal(1, cache.Metrics.StoreErrorsOf(CacheStoreFailureReason.Timeout));
        using var next = await client.GetAsync("/bucket/second.bin");
        Assert.Equal("MISS", next.Headers.GetValues("X-Cache").Single());
        Assert.Equal(second.Body, await next.Content.ReadAsByteArrayAsync());
    }

    [Fact]
    public async Task A_lookup_the_store_refused_takes_it_offline_at_once()
    {
        using var probed = await ProbedHealthAsync();
        var (metrics, health) = (probed.Metrics, probed.Health);

        health.LookupFailed(new HttpRequestException("refused", new SocketException((int)SocketError.ConnectionRefused)), TimeSpan.FromSeconds(2));
        Assert.False(health.Online);
        Assert.Equal(1, metrics.StoreErrorsOf(CacheStoreFailureReason.Unreachable));
    }

    [Fact]
    public async Task A_store_call_sidekick_had_no_socket_for_leaves_the_store_online()
    {
        // Out of descriptors (EMFILE) or socket memory: sidekick's shortage, which says nothing about the store.
        using var probed = await ProbedHealthAsync();
        var (metrics, health) = (probed.Metrics, probed.Health);

        health.LookupFailed(new HttpRequestException("no socket", new SocketException((int)SocketError.TooManyOpenSockets)), TimeSpan.FromSeconds(2));
        health.MarkOffline(new HttpRequestException("no socket", new SocketException((int)SocketError.NoBufferSpaceAvailable)));
        Assert.True(health.Online);
        Assert.Equal(0, metrics.StoreErrorsOf(CacheStoreFailureReason.Unreachable));
        Assert.Equal(0, metrics.StoreErrorsOf(CacheStoreFailureReason.Other));
    }

    [Fact]
    public async Task Lookups_a_busy_store_answered_with_a_5xx_count_with_the_slow_ones_and_a_403_takes_it_offline_at_once()
    {
        using var probed = await ProbedHealthAsync();
        var (time, metrics, health) = (probed.Time, probed.Metrics, probed.Health);
        var timeout = TimeSpan.FromSeconds(2);
        var slowDown = new AmazonS3Exception("Please reduce your request rate.", null, ErrorType.Receiver, "SlowDown", "r1", HttpStatusCode.ServiceUnavailable);

        // S3 throttling a prefix, then a slow lookup: each bypasses its own request, and the store stays in use.
        health.LookupFailed(slowDown, timeout);
        time.Advance(TimeSpan.FromSeconds(1));
        health.LookupFailed(new OperationCanceledException(), timeout);
        Assert.True(health.Online);
        Assert.Equal(1, metrics.StoreErrorsOf(CacheStoreFailureReason.Other));

        // The third busy answer within 10 s: offline.
        health.LookupFailed(new HttpRequestException("the store answered GET of k with 500 Internal Server Error", null, HttpStatusCode.InternalServerError), timeout);
        Assert.False(health.Online);

        using var again = await ProbedHealthAsync();
        again.Health.LookupFailed(new AmazonS3Exception("Access Denied", null, ErrorType.Sender, "AccessDenied", "r2", HttpStatusCode.Forbidden), timeout);
        Assert.False(again.Health.Online);
        Assert.Equal(1, again.Metrics.StoreErrorsOf(CacheStoreFailureReason.CredentialsRejected));
    }

    [Fact]
    public async Task A_lookup_answered_503_slow_down_bypasses_only_its_own_request()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var first = backend.Put("/bucket/throttled.bin", 64 * 1024, "max-age=300");
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(relay.Url));
        await using var running = instance;
        var cache = instance.Server.Cache!;

        relay.EntryLookupsAnswer = HttpStatusCode.ServiceUnavailable;
        using (var throttled = await client.GetAsync("/bucket/throttled.bin"))
        {
            Assert.Equal("BYPASS", throttled.Headers.GetValues("X-Cache").Single());
            Assert.Equal(first.Body, await throttled.Content.ReadAsByteArrayAsync());
        }

        relay.EntryLookupsAnswer = null;
        Assert.True(cache.Health.Online, "one throttled lookup took the store offline");
        Assert.Equal(1, cache.Metrics.StoreErrorsOf(CacheStoreFailureReason.Other));
        using (var next = await client.GetAsync("/bucket/throttled.bin"))
        {
            Assert.Equal("MISS", next.Headers.GetValues("X-Cache").Single());
            Assert.Equal(first.Body, await next.Content.ReadAsByteArrayAsync());
        }

        // Stored now. A request with its own validator is looked up with a HEAD, and the read of the body it found is
        // throttled: that request too goes to the origin, and the store stays in use.
        await fixture.Eventually(() => cache.Metrics.FillsCompleted == 1 && cache.FillsInFlight == 0, "the fill stored");
        relay.EntryReadsAnswer = HttpStatusCode.ServiceUnavailable;
        var revalidating = new HttpRequestMessage(HttpMethod.Get, "/bucket/throttled.bin");
        revalidating.Headers.TryAddWithoutValidation("If-None-Match", "\"an-older-copy\"");
        using (var read = await client.SendAsync(revalidating))
        {
            Assert.Equal("BYPASS", read.Headers.GetValues("X-Cache").Single());
            Assert.Equal(first.Body, await read.Content.ReadAsByteArrayAsync());
        }

        relay.EntryReadsAnswer = null;
        Assert.True(cache.Health.Online, "one throttled read took the store offline");
        Assert.Equal(2, cache.Metrics.StoreErrorsOf(CacheStoreFailureReason.Other));
        using var hit = await client.GetAsync("/bucket/throttled.bin");
        Assert.Equal("HIT", hit.Headers.GetValues("X-Cache").Single());
    }

    [Fact]
    public async Task Without_a_cache_the_state_says_so()
    {
        await using var backend = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([backend]);
        var state = JsonDocument.Parse(await sidekick.Client.GetStringAsync("/v1/state")).RootElement;
        Assert.Equal(JsonValueKind.Null, state.GetProperty("cache").ValueKind);
    }

    [Theory]
    [InlineData("SignatureDoesNotMatch", HttpStatusCode.Forbidden, "credentials_rejected")]
    [InlineData("InvalidAccessKeyId", HttpStatusCode.Forbidden, "credentials_rejected")]
    [InlineData("AccessDenied", HttpStatusCode.Forbidden, "credentials_rejected")]
    [InlineData("NoSuchBucket", HttpStatusCode.NotFound, "bucket_missing")]
    [InlineData("InternalError", HttpStatusCode.InternalServerError, "other")]
    public void The_stores_answers_are_classified(string code, HttpStatusCode status, string reason)
    {
        var failure = CacheStoreFailure.Of(new AmazonS3Exception("it said no", ErrorType.Sender, code, "request-1", status));
        Assert.Equal(reason, failure.Label);
        Assert.EndsWith($"{code}: it said no", failure.Detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(HttpStatusCode.Forbidden, "credentials_rejected")]
    [InlineData(HttpStatusCode.Unauthorized, "credentials_rejected")]
    [InlineData(HttpStatusCode.ServiceUnavailable, "other")]
    public void Answers_to_the_HEADs_sidekick_signs_itself_are_classified_by_their_status(HttpStatusCode status, string reason)
    {
        var failure = CacheStoreFailure.Of(new HttpRequestException($"the store answered HEAD of k with {(int)status}", null, status));
        Assert.Equal(reason, failure.Label);
        Assert.Equal($"the store answered HEAD of k with {(int)status}", failure.Detail);
    }

    [Fact]
    public async Task A_store_error_echoing_the_credential_or_the_access_key_keeps_neither()
    {
        using var probed = await ProbedHealthAsync();
        var key = fixture.Environment()["SIDEKICK_CACHE_ACCESS_KEY"]!;
        var said = $"The authorization header is malformed; Credential={key}/20261207/us-east-1/s3/aws4_request, SignedHeaders=host, " +
                   $"Signature=0123abcd; access key {key} is not valid here";
        probed.Health.LookupFailed(new AmazonS3Exception(said, ErrorType.Sender, "AuthorizationHeaderMalformed", "request-1", HttpStatusCode.Forbidden), TimeSpan.FromSeconds(2));

        Assert.False(probed.Health.Online);
        var detail = probed.Health.Snapshot().LastError!.Detail;
        Assert.Equal(
            "AuthorizationHeaderMalformed: The authorization header is malformed; Credential=REDACTED, SignedHeaders=host, " +
            "Signature=0123abcd; access key REDACTED is not valid here", detail);
        // Where it is printed (--log, --json, /v1/state), the signature goes too.
        Assert.DoesNotContain("0123abcd", Sidekick.Observability.SecretRedaction.Text(detail), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("x credential=AKIAEXAMPLE/2026/us-east-1/s3/aws4_request", "AKIAEXAMPLE", "x credential=REDACTED")]
    [InlineData("X-Amz-Credential=AKIAEXAMPLE%2F2026&b=1", "other", "X-Amz-Credential=REDACTED&b=1")]
    [InlineData("key AKIAEXAMPLE unknown", "AKIAEXAMPLE", "key REDACTED unknown")]
    [InlineData("connection refused", "AKIAEXAMPLE", "connection refused")]
    public void Store_error_text_loses_the_credential_scope_and_the_access_key(string detail, string accessKey, string expected) =>
        Assert.Equal(expected, new CacheStoreFailure(CacheStoreFailureReason.Other, detail).WithoutSecrets(accessKey).Detail);

    [Fact]
    public void Transport_failures_are_classified()
    {
        var refused = CacheStoreFailure.Of(new HttpRequestException("x", new SocketException((int)SocketError.ConnectionRefused)));
        Assert.Equal((CacheStoreFailureReason.Unreachable, "connection refused"), (refused.Reason, refused.Detail));
        var timeout = CacheStoreFailure.Of(new TaskCanceledException(), TimeSpan.FromSeconds(5));
        Assert.Equal((CacheStoreFailureReason.Timeout, "no answer within 5s"), (timeout.Reason, timeout.Detail));
        Assert.Equal("timeout", timeout.Label);
        Assert.Equal(CacheStoreFailureReason.Other, CacheStoreFailure.Of(null).Reason);
    }

    /// <summary>The store's health on a fake clock (a minute between scheduled probes), after a good first probe of s3rver.</summary>
    private async Task<ProbedHealth> ProbedHealthAsync()
    {
        var probed = new ProbedHealth(fixture.Environment());
        await probed.Health.FirstProbe.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.True(probed.Health.Online);
        return probed;
    }

    private sealed class ProbedHealth : IDisposable
    {
        private readonly S3CacheStore _store;

        public ProbedHealth(Dictionary<string, string?> environment)
        {
            _store = new S3CacheStore(CacheOptions.FromEnvironment(environment)!);
            Health = new CacheHealth(_store, Metrics, interval: TimeSpan.FromMinutes(1), Time);
        }

        public FakeTimeProvider Time { get; } = new(DateTimeOffset.UtcNow);

        public CacheMetrics Metrics { get; } = new();

        public CacheHealth Health { get; }

        public void Dispose()
        {
            Health.Dispose();
            Metrics.Dispose();
            _store.Dispose();
        }
    }

    private static Dictionary<string, string?> Fast(Dictionary<string, string?> environment)
    {
        environment["SIDEKICK_CACHE_HEALTH_DURATION"] = "200ms";
        return environment;
    }

    /// <summary>sidekick with --log in console mode, its stdout kept, not waiting for the store.</summary>
    private sealed class RunningSidekick : IAsyncDisposable
    {
        private readonly StringWriter _output;
        private readonly TextWriter _stdout;

        private RunningSidekick(SidekickInstance instance, HttpClient client, StringWriter output, TextWriter stdout)
        {
            Instance = instance;
            Client = client;
            _output = output;
            _stdout = stdout;
        }

        public SidekickInstance Instance { get; }

        public HttpClient Client { get; }

        public ResponseCache Cache => Instance.Server.Cache!;

        public static async Task<RunningSidekick> StartAsync(TestBackend backend, Dictionary<string, string?> environment, bool json)
        {
            var port = SidekickProcess.FreePort();
            var options = SidekickHarness.FastOptions with
            {
                Address = $"127.0.0.1:{port}", Sites = [backend.Url.ToString().TrimEnd('/')], Log = true, Json = json,
            };
            var output = new StringWriter();
            var stdout = TextWriter.Synchronized(output);
            var instance = SidekickApp.Create(options, new SidekickSeams
            {
                Stdout = stdout, Stderr = TextWriter.Null, Environment = environment, StdoutIsTerminal = false,
            });
            await instance.Server.StartAsync();
            var sidekick = new RunningSidekick(instance, new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") }, output, stdout);
            await sidekick.WaitUntilAsync(() => instance.Server.Topology.Current.ActiveSite is not null, "the backend to come up");
            return sidekick;
        }

        /// <summary>The lines about the cache store printed so far.</summary>
        public string[] CacheLines()
        {
            string text;
            lock (_stdout)
            {
                text = _output.ToString();
            }

            return text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Where(l => l.Contains("cache store ", StringComparison.Ordinal) || l.Contains("\"Cache\":", StringComparison.Ordinal)).ToArray();
        }

        public async Task<JsonElement> StateCacheAsync() =>
            JsonDocument.Parse(await Client.GetStringAsync("/v1/state")).RootElement.GetProperty("cache");

        public async Task WaitUntilAsync(Func<bool> condition, string what)
        {
            var deadline = Environment.TickCount64 + 20000;
            while (!condition())
            {
                if (Environment.TickCount64 > deadline)
                {
                    throw new TimeoutException($"waited 20 s for {what}; output so far: {string.Join(" | ", CacheLines())}");
                }

                await Task.Delay(25);
            }
        }

        public async ValueTask DisposeAsync()
        {
            Client.Dispose();
            await Instance.Server.StopAsync();
            await Instance.DisposeAsync();
        }
    }
}
