using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Caching;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Caching;

/// <summary>
/// An answer the cache serves and does not store says why, through the process with s3rver as the store: counted by
/// reason (metrics, /v1/state), and for the reasons an operator can act on, a --log line, at most one per reason a
/// minute. Nothing is lost: every such answer reaches its client whole.
/// </summary>
public sealed class NotStoredTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    [Fact]
    public async Task Each_answer_not_stored_is_counted_by_reason_and_a_limit_to_raise_is_logged_once_a_minute()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var objects = new[]
        {
            backend.Put("/bucket/private.bin", 4096, "private, max-age=300"),
            backend.Put("/bucket/tiny.bin", 100), // under the fixture's 1 KiB minimum
            backend.Put("/bucket/large-1.bin", 64 * 1024),
            backend.Put("/bucket/large-2.bin", 64 * 1024),
            backend.Put("/bucket/kept.bin", 8 * 1024),
        };
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_MAX_SIZE"] = "32KiB";
        await using var sidekick = await LoggingSidekick.StartAsync(fixture, backend, environment);
        var (client, cache) = (sidekick.Client, sidekick.Cache);

        foreach (var (path, item) in new[] { "/bucket/private.bin", "/bucket/tiny.bin", "/bucket/large-1.bin", "/bucket/large-2.bin", "/bucket/kept.bin" }.Zip(objects))
        {
            using var response = await client.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("MISS", response.Headers.GetValues(ResponseCache.CacheHeader).Single());
            Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync());
        }

        var metrics = cache.Metrics;
        Assert.Equal(1, metrics.NotStoredOf(NotStoredReason.Private));
        Assert.Equal(1, metrics.NotStoredOf(NotStoredReason.TooSmall));
        Assert.Equal(2, metrics.NotStoredOf(NotStoredReason.TooLarge));
        Assert.Equal(4, Enum.GetValues<NotStoredReason>().Sum(metrics.NotStoredOf)); // kept.bin is stored
        await fixture.Eventually(() => metrics.FillsCompleted == 1, "kept.bin to be stored");

        var text = await client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains("sidekick_cache_not_stored_total{reason=\"too_large\"} 2\n", text, StringComparison.Ordinal);
        Assert.Contains("sidekick_cache_not_stored_total{reason=\"private\"} 1\n", text, StringComparison.Ordinal);
        Assert.Contains("sidekick_cache_not_stored_total{reason=\"fills_busy\"} 0\n", text, StringComparison.Ordinal);
        var state = JsonDocument.Parse(await client.GetStringAsync("/v1/state")).RootElement.GetProperty("cache").GetProperty("notStored");
        Assert.Equal(2, state.GetProperty("too_large").GetInt32());
        Assert.Equal(1, state.GetProperty("too_small").GetInt32());

        // The origin's choices (private) and the minimum size are the cache working as configured: counted only. A
        // response over the maximum is a limit an operator may want to raise: one line, not one per response.
        await fixture.Eventually(() => sidekick.NotStoredLines().Length > 0, "the line (the log is written by its own thread)");
        var line = Assert.Single(sidekick.NotStoredLines());
        Assert.EndsWith("cache did not store /bucket/large-1.bin (too_large): 65536 bytes, more than SIDEKICK_CACHE_MAX_SIZE (32768 bytes)", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_answer_that_finds_every_fill_slot_taken_is_served_counted_and_logged()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var first = backend.Put("/bucket/first.bin", 6 * 1024 * 1024); // over one 5 MiB part: a multipart upload
        var next = backend.Put("/bucket/next.bin", 64 * 1024);
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var upload = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.PartsWaitFor = upload.Task; // the first fill holds its slot until its parts are let through
        var environment = fixture.Environment(relay.Url);
        environment["SIDEKICK_CACHE_MAX_FILLS"] = "1";
        await using var sidekick = await LoggingSidekick.StartAsync(fixture, backend, environment);
        var (client, cache) = (sidekick.Client, sidekick.Cache);

        Assert.Equal(first.Body, await client.GetByteArrayAsync("/bucket/first.bin"));
        Assert.Equal(1, cache.Fills.InFlight);
        using (var response = await client.GetAsync("/bucket/next.bin"))
        {
            Assert.Equal("MISS", response.Headers.GetValues(ResponseCache.CacheHeader).Single());
            Assert.Equal(next.Body, await response.Content.ReadAsByteArrayAsync());
        }

        Assert.Equal(1, cache.Metrics.NotStoredOf(NotStoredReason.FillsBusy));
        await fixture.Eventually(() => sidekick.NotStoredLines().Length > 0, "the line (the log is written by its own thread)");
        var line = Assert.Single(sidekick.NotStoredLines());
        Assert.EndsWith("cache did not store /bucket/next.bin (fills_busy): SIDEKICK_CACHE_MAX_FILLS (1) fills were already running", line, StringComparison.Ordinal);

        upload.SetResult();
        // Once seen failing in CI's YARP pass on a loaded machine (the fill neither stored nor given up within 60 s):
        // a second failure says what the store saw and where the fill stood.
        await fixture.Eventually(() => cache.Metrics.FillsCompleted == 1 || cache.Metrics.FillsAbandoned > 0,
            $"the first entry to be stored; then: {cache.Fills.InFlight} fills in flight; the store saw so far: {string.Join(", ", relay.Requests)}");
        Assert.Equal(0, cache.Metrics.FillsAbandoned);
        Assert.Equal(1, cache.Metrics.FillsCompleted);
    }

    [Fact]
    public void A_reason_gets_a_line_a_minute_and_the_next_line_counts_those_between()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var log = new NotStoredLog(time);
        Assert.False(log.Due(NotStoredReason.Private, out _)); // counted, never logged
        Assert.True(log.Due(NotStoredReason.TooLarge, out var unlogged));
        Assert.Equal(0, unlogged);
        Assert.True(log.Due(NotStoredReason.FillsBusy, out _)); // each reason on its own
        Assert.False(log.Due(NotStoredReason.TooLarge, out _));
        time.Advance(NotStoredLog.Interval - TimeSpan.FromSeconds(1));
        Assert.False(log.Due(NotStoredReason.TooLarge, out _));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(log.Due(NotStoredReason.TooLarge, out unlogged));
        Assert.Equal(2, unlogged);
    }

    /// <summary>sidekick with --log, its output kept.</summary>
    private sealed class LoggingSidekick : IAsyncDisposable
    {
        private readonly StringWriter _output = new();
        private readonly TextWriter _stdout;
        private SidekickInstance? _instance;

        private LoggingSidekick() => _stdout = TextWriter.Synchronized(_output);

        public HttpClient Client { get; private set; } = null!;

        public ResponseCache Cache => _instance!.Server.Cache!;

        public static async Task<LoggingSidekick> StartAsync(CacheFixture fixture, CacheTestBackend backend, Dictionary<string, string?> environment)
        {
            var sidekick = new LoggingSidekick();
            (sidekick._instance, sidekick.Client) = await fixture.StartSidekickAsync(
                [backend.Url], SidekickHarness.FastOptions with { Log = true }, environment, sidekick._stdout);
            return sidekick;
        }

        /// <summary>The "cache did not store" lines printed so far.</summary>
        public string[] NotStoredLines()
        {
            lock (_stdout)
            {
                return _output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Where(l => l.Contains("cache did not store", StringComparison.Ordinal)).ToArray();
            }
        }

        public async ValueTask DisposeAsync()
        {
            Client.Dispose();
            if (_instance is not null)
            {
                await _instance.DisposeAsync();
            }
        }
    }
}
