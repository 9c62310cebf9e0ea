using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Caching;

public sealed class ResponseCacheTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    private static async Task<(HttpResponseMessage Response, byte[] Body)> GetAsync(HttpClient client, string path, Action<HttpRequestMessage>? configure = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        configure?.Invoke(request);
        var response = await client.SendAsync(request);
        return (response, await response.Content.ReadAsByteArrayAsync());
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition, Func<string>? context = null)
    {
        var deadline = Environment.TickCount64 + 15000;
        while (!await condition())
        {
            Assert.True(Environment.TickCount64 < deadline, "timed out" + (context is null ? "" : ": " + context()));
            await Task.Delay(50);
        }
    }

    /// <summary>
    /// Fills settle in the background after the response: wait until the entry answers (from its fill's spool at
    /// first) and its fill has reached the store.
    /// </summary>
    private static async Task UntilStoredAsync(SidekickInstance instance, HttpClient client, string path)
    {
        await WaitForAsync(async () =>
        {
            using var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, path) { Headers = { { "Cache-Control", "only-if-cached" } } });
            return response.StatusCode == HttpStatusCode.OK;
        });
        await WaitForAsync(() => Task.FromResult(instance.Server.Cache!.FillsInFlight == 0), () => "the fill to reach the store");
    }

    [Fact]
    public async Task Miss_fills_then_hits_with_age_and_identical_bytes()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/a.bin", 3 * 1024 * 1024 + 17);
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;

        var (first, firstBody) = await GetAsync(client, "/bucket/a.bin");
        Assert.Equal("MISS", Outcome(first));
        Assert.Equal(item.Body, firstBody);
        await UntilStoredAsync(instance, client, "/bucket/a.bin");

        var (second, secondBody) = await GetAsync(client, "/bucket/a.bin");
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Equal("HIT", Outcome(second));
        Assert.Equal(item.Body, secondBody);
        Assert.NotNull(second.Headers.Age);
        Assert.Equal(item.ETag, second.Headers.ETag!.ToString());
        Assert.Equal(1, backend.Served("/bucket/a.bin"));
        Assert.True(instance.Server.Cache!.Metrics.BytesServed >= item.Body.Length);
    }

    [Fact]
    public async Task A_bypassing_request_retried_on_another_backend_still_says_bypass()
    {
        // The first backend of the site goes away while it is still up in sidekick's eyes, so the first request
        // to pick it is retried on the second: the retry must not drop what the cache said about the request.
        var gone = await CacheTestBackend.StartAsync();
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/r.bin", 64 * 1024);
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5) };
        var (instance, client) = await fixture.StartSidekickAsync([gone, backend], options);
        await using var running = instance;
        await WaitForAsync(() => Task.FromResult(instance.Server.Topology.Current.ActiveSite!.Backends.All(b => b.IsUp)));
        await gone.DisposeAsync();

        for (var i = 0; i < 20 && instance.Server.Retries.Count.Value == 0; i++)
        {
            var (response, body) = await GetAsync(client, "/bucket/r.bin", r => r.Headers.CacheControl = new CacheControlHeaderValue { NoStore = true });
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(64 * 1024, body.Length);
            Assert.True(Outcome(response) == "BYPASS", $"request {i}: X-Cache {Outcome(response)}, retries {instance.Server.Retries.Count.Value}");
        }

        Assert.True(instance.Server.Retries.Count.Value >= 1, "no request was retried");
    }

    [Fact]
    public async Task Small_responses_and_no_store_are_not_cached_and_errors_pass_unchanged()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/small", 100);
        backend.Put("/nostore", 4096, "no-store");
        backend.Put("/private", 4096, "private, max-age=60");
        backend.Put("/broken", 4096).FailWith = 500;
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;

        foreach (var path in new[] { "/small", "/nostore", "/private" })
        {
            await GetAsync(client, path);
            await Task.Delay(300);
            var (again, _) = await GetAsync(client, path);
            Assert.Equal("MISS", Outcome(again));
            Assert.Equal(2, backend.Served(path));
        }

        var (broken, body) = await GetAsync(client, "/broken");
        Assert.Equal(HttpStatusCode.InternalServerError, broken.StatusCode);
        Assert.Equal("origin error", System.Text.Encoding.ASCII.GetString(body));

        var (missing, _) = await GetAsync(client, "/nope");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);

        using var onlyCached = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/never-seen") { Headers = { { "Cache-Control", "only-if-cached" } } });
        Assert.Equal(HttpStatusCode.GatewayTimeout, onlyCached.StatusCode);

        // §5.2.1.7 also where the cache is bypassed (no-store, a GET with content): a 504, and the origin is not asked.
        var served = backend.Served("/small");
        using var noStore = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/small") { Headers = { { "Cache-Control", "only-if-cached, no-store" } } });
        Assert.Equal(HttpStatusCode.GatewayTimeout, noStore.StatusCode);
        using var withContent = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/small")
        {
            Headers = { { "Cache-Control", "only-if-cached" } },
            Content = new StringContent("q"),
        });
        Assert.Equal(HttpStatusCode.GatewayTimeout, withContent.StatusCode);
        Assert.Equal(served, backend.Served("/small"));
    }

    [Fact]
    public async Task A_user_without_access_never_gets_another_users_cached_bytes()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/secret/report.bin", 64 * 1024, cacheControl: null);
        item.AllowedUser = "alice";
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        void Alice(HttpRequestMessage r) => r.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "alice");
        void Bob(HttpRequestMessage r) => r.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "bob");

        var (first, _) = await GetAsync(client, "/secret/report.bin", Alice);
        Assert.Equal("MISS", Outcome(first));
        // only-if-cached cannot tell: an entry filled with credentials is never served without asking the origin.
        await WaitForAsync(() => Task.FromResult(instance.Server.Cache!.Metrics.FillsCompleted >= 1));

        // Alice again: confirmed by the backend with her own credentials (304), bytes from the cache.
        var (again, againBody) = await GetAsync(client, "/secret/report.bin", Alice);
        Assert.Equal("REVALIDATED", Outcome(again));
        Assert.Equal(item.Body, againBody);
        Assert.Equal(1, backend.Served("/secret/report.bin"));

        // Bob: the backend refuses him, and so does the cache.
        var (bob, bobBody) = await GetAsync(client, "/secret/report.bin", Bob);
        Assert.Equal(HttpStatusCode.Forbidden, bob.StatusCode);
        Assert.DoesNotContain(item.Body.Take(64).ToArray(), SplitIntoChunks(bobBody));
        Assert.True(bobBody.Length < 1000);
    }

    private static IEnumerable<byte[]> SplitIntoChunks(byte[] body) => body.Chunk(64);

    [Fact]
    public async Task Presigned_urls_differing_only_in_signature_share_one_entry()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/shared.bin", 32 * 1024, "public, max-age=300");
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        var seen = new List<string>();
        await GetAsync(client, "/bucket/shared.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=aaaa&X-Amz-Date=20260101T000000Z");
        await WaitForAsync(async () =>
        {
            var (response, _) = await GetAsync(client, "/bucket/shared.bin?X-Amz-Signature=bbbb&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260102T000000Z");
            // Filled with a presigned (credentialed) URL: each reuse is confirmed with the requester's own 304.
            seen.Add($"{(int)response.StatusCode} {Outcome(response)} served={backend.Served("/bucket/shared.bin")}");
            return Outcome(response) == "REVALIDATED";
        });
        Assert.True(backend.Served("/bucket/shared.bin") == 1, string.Join(" | ", seen));
    }

    [Fact]
    public async Task Changed_object_replaces_the_entry_and_404_evicts_it()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/v.bin", 16 * 1024, "max-age=0");
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await GetAsync(client, "/bucket/v.bin");
        // Stale from the start (max-age=0), so only-if-cached answers 504 (§5.2.1.7): wait for the fill instead.
        await WaitForAsync(() => Task.FromResult(instance.Server.Cache!.Metrics.FillsCompleted >= 1));
        var (revalidated, _) = await GetAsync(client, "/bucket/v.bin");
        Assert.Equal("REVALIDATED", Outcome(revalidated));

        // The object changes behind sidekick's back: the revalidation returns 200 and the entry is replaced.
        var changed = backend.Put("/bucket/v.bin", 20 * 1024, "max-age=0");
        var (fresh, freshBody) = await GetAsync(client, "/bucket/v.bin");
        Assert.Equal("MISS", Outcome(fresh));
        Assert.Equal(changed.Body, freshBody);
        await WaitForAsync(async () =>
        {
            var (response, body) = await GetAsync(client, "/bucket/v.bin");
            return Outcome(response) == "REVALIDATED" && body.SequenceEqual(changed.Body);
        });

        // Deleted at the origin: 404 passes through and the entry is gone.
        backend.Objects.TryRemove("/bucket/v.bin", out _);
        var (gone, _) = await GetAsync(client, "/bucket/v.bin");
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        using var onlyCached = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/bucket/v.bin") { Headers = { { "Cache-Control", "only-if-cached" } } });
        Assert.Equal(HttpStatusCode.GatewayTimeout, onlyCached.StatusCode);
    }

    [Fact]
    public async Task Put_and_delete_through_sidekick_invalidate()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/w.bin", 16 * 1024);
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await GetAsync(client, "/bucket/w.bin");
        await UntilStoredAsync(instance, client, "/bucket/w.bin");

        var replacement = RandomNumberGenerator.GetBytes(8 * 1024);
        (await client.PutAsync("/bucket/w.bin", new ByteArrayContent(replacement))).EnsureSuccessStatusCode();
        var (afterPut, body) = await GetAsync(client, "/bucket/w.bin");
        Assert.Equal("MISS", Outcome(afterPut));
        Assert.Equal(replacement, body);
        await UntilStoredAsync(instance, client, "/bucket/w.bin");

        (await client.DeleteAsync("/bucket/w.bin")).EnsureSuccessStatusCode();
        var (afterDelete, _) = await GetAsync(client, "/bucket/w.bin");
        Assert.Equal(HttpStatusCode.NotFound, afterDelete.StatusCode);
    }

    [Fact]
    public async Task A_client_aborting_mid_fill_leaves_no_entry()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/big.bin", 12 * 1024 * 1024);
        backend.ChunkDelayMs = 5;
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        using (var response = await client.GetAsync("/bucket/big.bin", HttpCompletionOption.ResponseHeadersRead))
        {
            var stream = await response.Content.ReadAsStreamAsync();
            var buffer = new byte[256 * 1024];
            await stream.ReadAtLeastAsync(buffer, buffer.Length);
        }

        await WaitForAsync(() => Task.FromResult(instance.Server.Cache!.Metrics.FillsAbandoned >= 1));
        using var onlyCached = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/bucket/big.bin") { Headers = { { "Cache-Control", "only-if-cached" } } });
        Assert.Equal(HttpStatusCode.GatewayTimeout, onlyCached.StatusCode);
    }

    [Fact]
    public async Task A_client_leaving_midway_through_a_stored_body_is_no_store_error_and_the_next_hit_is_whole()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/left.bin", 24 * 1024 * 1024);
        var log = new LineCollector();
        var (instance, client) = await fixture.StartSidekickAsync([backend.Url], SidekickHarness.FastOptions with { Log = true, Trace = "all" }, stdout: log);
        await using var running = instance;
        await GetAsync(client, "/bucket/left.bin");
        await UntilStoredAsync(instance, client, "/bucket/left.bin");
        var metrics = instance.Server.Cache!.Metrics;
        var (errors, resumed, cut) = (metrics.StoreErrors, metrics.StoredReadsResumed, metrics.StoredReadsCut);
        // The only-if-cached probe that found the entry is the one HIT so far: its line must be out before counting on.
        await WaitForAsync(() => Task.FromResult(log.Count("GET /bucket/left.bin", "cache=HIT") == 1), () => log.ToString());

        // On its own connection, the client reads the head and 256 KiB of the 24 MiB HIT, then resets the connection.
        using (var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp))
        {
            await socket.ConnectAsync(client.BaseAddress!.Host, client.BaseAddress.Port);
            await socket.SendAsync(System.Text.Encoding.ASCII.GetBytes($"GET /bucket/left.bin HTTP/1.1\r\nHost: {client.BaseAddress.Authority}\r\n\r\n"));
            var received = 0;
            var buffer = new byte[64 * 1024];
            while (received < 256 * 1024)
            {
                var read = await socket.ReceiveAsync(buffer);
                Assert.True(read > 0, "the HIT ended early");
                received += read;
            }

            socket.LingerState = new System.Net.Sockets.LingerOption(true, 0); // a reset, at once
        }

        // Its request is over once its line is written (the trace line comes at the end of each request).
        await WaitForAsync(() => Task.FromResult(log.Count("GET /bucket/left.bin", "cache=HIT") == 2), () => log.ToString());
        // Its trace line says what it was sent, not the length the head announced: the probe's line alone has all of it.
        // (What it was sent is what it read, plus the socket buffers on both sides: a few MiB on Linux, not 24.)
        var allOfIt = $"↓ {Sidekick.Cli.ByteSize.FormatIec(item.Body.Length)} cache=HIT";
        Assert.True(log.Count("GET /bucket/left.bin", allOfIt) == 1, log.ToString());
        Assert.Equal((errors, resumed, cut), (metrics.StoreErrors, metrics.StoredReadsResumed, metrics.StoredReadsCut));
        Assert.True(instance.Server.Cache.Health.Online, "a client going away took the store offline");

        var (whole, body) = await GetAsync(client, "/bucket/left.bin");
        Assert.Equal("HIT", Outcome(whole));
        Assert.Equal(item.Body, body);
        Assert.Equal(1, backend.Served("/bucket/left.bin"));
    }

    /// <summary>Sidekick's stdout, kept line by line for the test to look at while it runs.</summary>
    private sealed class LineCollector : TextWriter
    {
        private readonly System.Text.StringBuilder _text = new();

        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;

        public override void Write(char value)
        {
            lock (_text)
            {
                _text.Append(value);
            }
        }

        public override void Write(string? value)
        {
            lock (_text)
            {
                _text.Append(value);
            }
        }

        public override string ToString()
        {
            lock (_text)
            {
                return _text.ToString();
            }
        }

        /// <summary>Lines holding every one of <paramref name="parts"/>.</summary>
        public int Count(params string[] parts)
        {
            lock (_text)
            {
                return _text.ToString().Split('\n').Count(line => parts.All(p => line.Contains(p, StringComparison.Ordinal)));
            }
        }
    }

    [Fact]
    public async Task Twenty_concurrent_misses_make_one_backend_fill()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/hot.bin", 2 * 1024 * 1024);
        backend.ChunkDelayMs = 2;
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        var bodies = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => client.GetByteArrayAsync("/bucket/hot.bin")));
        Assert.All(bodies, b => Assert.Equal(item.Body, b));
        Assert.Equal(1, backend.Served("/bucket/hot.bin"));
    }

    [Fact]
    public async Task Range_and_head_are_answered_from_the_cache()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/r.bin", 1024 * 1024);
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await GetAsync(client, "/bucket/r.bin");
        await UntilStoredAsync(instance, client, "/bucket/r.bin");

        var (ranged, part) = await GetAsync(client, "/bucket/r.bin", r => r.Headers.Range = new RangeHeaderValue(1000, 1999));
        Assert.Equal(HttpStatusCode.PartialContent, ranged.StatusCode);
        Assert.Equal("HIT", Outcome(ranged));
        Assert.Equal("bytes 1000-1999/1048576", ranged.Content.Headers.ContentRange!.ToString());
        Assert.Equal(item.Body.AsSpan(1000, 1000).ToArray(), part);

        var (suffix, tail) = await GetAsync(client, "/bucket/r.bin", r => r.Headers.TryAddWithoutValidation("Range", "bytes=-10"));
        Assert.Equal(HttpStatusCode.PartialContent, suffix.StatusCode);
        Assert.Equal(item.Body[^10..], tail);

        var (beyond, _) = await GetAsync(client, "/bucket/r.bin", r => r.Headers.TryAddWithoutValidation("Range", "bytes=2000000-"));
        Assert.Equal(HttpStatusCode.RequestedRangeNotSatisfiable, beyond.StatusCode);

        using var head = await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/bucket/r.bin"));
        Assert.Equal("HIT", Outcome(head));
        Assert.Equal(item.Body.Length, head.Content.Headers.ContentLength);

        var (notModified, _) = await GetAsync(client, "/bucket/r.bin", r => r.Headers.TryAddWithoutValidation("If-None-Match", item.ETag));
        Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);
        Assert.Equal(1, backend.Served("/bucket/r.bin"));
    }

    [Fact]
    public async Task Vary_accept_encoding_keeps_two_variants_apart()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/page", 8 * 1024).Vary = "Accept-Encoding";
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        void Gzip(HttpRequestMessage r) => r.Headers.TryAddWithoutValidation("Accept-Encoding", "gzip");
        void Identity(HttpRequestMessage r) => r.Headers.TryAddWithoutValidation("Accept-Encoding", "identity");

        var (_, gzipBody) = await GetAsync(client, "/bucket/page", Gzip);
        var (_, identityBody) = await GetAsync(client, "/bucket/page", Identity);
        Assert.NotEqual(gzipBody, identityBody);
        await WaitForAsync(async () =>
        {
            var (g, gb) = await GetAsync(client, "/bucket/page", Gzip);
            var (i, ib) = await GetAsync(client, "/bucket/page", Identity);
            return Outcome(g) == "HIT" && Outcome(i) == "HIT" && gb.SequenceEqual(gzipBody) && ib.SequenceEqual(identityBody);
        });
    }

    [Fact]
    public async Task Store_stopped_mid_run_means_uncached_traffic_without_errors()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/s.bin", 64 * 1024);
        var data = Directory.CreateTempSubdirectory("sidekick-cache-stop").FullName;
        var store = await Sidekick.Tests.Infrastructure.S3rverProcess.StartAsync(data, CacheFixture.Bucket);
        var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(store.Url));
        await using var running = instance;
        await GetAsync(client, "/bucket/s.bin");
        await UntilStoredAsync(instance, client, "/bucket/s.bin");

        await store.DisposeAsync();
        for (var i = 0; i < 10; i++)
        {
            var (response, body) = await GetAsync(client, "/bucket/s.bin");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(item.Body, body);
        }

        Assert.False(instance.Server.Cache!.Health.Online);
        var (bypassed, _) = await GetAsync(client, "/bucket/s.bin");
        Assert.Equal("BYPASS", Outcome(bypassed));
    }

    [Fact]
    public async Task Cache_counters_appear_in_the_metrics()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/m.bin", 16 * 1024);
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await GetAsync(client, "/bucket/m.bin");
        await UntilStoredAsync(instance, client, "/bucket/m.bin");
        var metrics = await client.GetStringAsync("/.prometheus/metrics");
        Assert.Matches(@"sidekick_cache_hits_total [1-9]", metrics);
        Assert.Matches(@"sidekick_cache_fills_completed_total 1", metrics);
    }

    [Fact]
    public async Task A_hit_is_counted_when_it_is_answered_not_when_its_body_ends()
    {
        // A HIT of a large object takes as long as its client reads: a dashboard (or a test holding the whole answer)
        // must see it counted from its head on, not only once the last byte went.
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/long.bin", 32 * 1024 * 1024);
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await GetAsync(client, "/bucket/long.bin");
        await UntilStoredAsync(instance, client, "/bucket/long.bin");
        var before = instance.Server.Cache!.Metrics.Hits;

        using var unread = await client.GetAsync("/bucket/long.bin", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("HIT", unread.Headers.GetValues("X-Cache").Single());
        // Its body is not read: sidekick waits to send the rest, and the hit is counted already.
        Assert.Equal(before + 1, instance.Server.Cache.Metrics.Hits);
    }
}
