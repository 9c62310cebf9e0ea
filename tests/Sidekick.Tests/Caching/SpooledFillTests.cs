using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Fills spool to disk and finish whatever the client's speed; a request for an entry being filled reads that
/// fill; a fill that cannot run says why (metric by reason, --log line).
/// </summary>
public sealed class SpooledFillTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    [Theory]
    [InlineData(0)] // 24 MiB at full speed: its upload begins once the client has it all
    [InlineData(30)] // 192 chunks 30 ms apart, about 6 s: its upload begins while it arrives
    public async Task A_body_that_arrives_fast_is_uploaded_after_it_and_a_slow_one_as_it_arrives(int chunkDelayMs)
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/upload-{chunkDelayMs}-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, chunkDelayMs == 0 ? 24 * 1024 * 1024 : 12 * 1024 * 1024);
        backend.ChunkDelayMs = chunkDelayMs;
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(relay.Url));
        await using var running = instance;
        client.DefaultRequestHeaders.Host = "minio.example:9000";
        var entry = "/cache/" + CacheFixture.ObjectName(CacheKey.For("minio.example:9000", path));

        using var miss = await client.GetAsync(path);
        Assert.Equal("MISS", Outcome(miss));
        Assert.Equal(item.Body, await miss.Content.ReadAsByteArrayAsync());
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted == 1, "the fill stored");

        // The multipart upload's start against the moment the origin had sent the whole body (sidekick has it
        // later still): not the moment the client has read it, which a busy machine delays past the upload's start.
        var uploadAt = relay.TimedRequests.First(r => r.Request == $"POST {entry}").At;
        var beforeBodyEnd = uploadAt < backend.BodySentAt[path];
        Assert.True(chunkDelayMs == 0 ? !beforeBodyEnd : beforeBodyEnd,
            $"body over {chunkDelayMs * 192} ms, upload delay {CacheFill.UploadDelay}; upload began {Stopwatch.GetElapsedTime(backend.BodySentAt[path], uploadAt).TotalMilliseconds:F0} ms after the origin's last byte; the store saw: {string.Join(", ", relay.Requests)}");
    }

    [Fact]
    public async Task Whole_fills_write_their_spool_past_the_page_cache_and_keep_every_byte()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        // Not a multiple of the block size, and more than the writer's buffers hold at once.
        var first = backend.Put("/bucket/direct-1.bin", 5 * DirectBufferBudget.LargeBufferSize + 4097 + 13);
        var second = backend.Put("/bucket/direct-2.bin", 3 * DirectBufferBudget.LargeBufferSize + 1);
        var spool = Directory.CreateTempSubdirectory("sidekick-spool-direct").FullName;
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = spool;
        var (instance, client) = await fixture.StartSidekickAsync(backend, environment);
        await using var running = instance;
        var opened = DirectSpoolWriter.Opened;

        // A second request while the first fill runs reads that fill's spool as the writer publishes it.
        backend.ChunkDelayMs = 5;
        var filling = client.GetAsync("/bucket/direct-1.bin");
        await fixture.Eventually(() => instance.Server.Cache!.FillsInFlight == 1, "the first fill to start");
        using var fromFill = await client.GetAsync("/bucket/direct-1.bin");
        using var miss = await filling;
        backend.ChunkDelayMs = 0;
        Assert.Equal("MISS", Outcome(miss));
        Assert.Equal(first.Body, await miss.Content.ReadAsByteArrayAsync());
        Assert.Equal("HIT", Outcome(fromFill));
        Assert.Equal(first.Body, await fromFill.Content.ReadAsByteArrayAsync());
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted == 1 && instance.Server.Cache.FillsInFlight == 0, "the first fill stored");

        // The next fill overwrites the larger file the first one left (kept for reuse), and a ranged HIT reads the store.
        using var secondMiss = await client.GetAsync("/bucket/direct-2.bin");
        Assert.Equal(second.Body, await secondMiss.Content.ReadAsByteArrayAsync());
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted == 2 && instance.Server.Cache.FillsInFlight == 0, "the second fill stored");
        foreach (var (path, item) in new[] { ("/bucket/direct-1.bin", first), ("/bucket/direct-2.bin", second) })
        {
            using var hit = await client.GetAsync(path);
            Assert.Equal("HIT", Outcome(hit));
            Assert.Equal(item.Body, await hit.Content.ReadAsByteArrayAsync());
            Assert.Equal(1, backend.Served(path));
        }

        Assert.Equal(0, instance.Server.Cache!.Metrics.FillsAbandoned);
        // Where the file system takes O_DIRECT (ext4, xfs, btrfs; tmpfs since Linux 6.6) both fills used it (the
        // count is the process's: fills of other test classes running meanwhile add to it).
        if (DirectIoSupported(spool))
        {
            Assert.True(DirectSpoolWriter.Opened >= opened + 2, $"{DirectSpoolWriter.Opened - opened} fills wrote with O_DIRECT");

            // The pages the uploads read left the page cache with each part: the file kept for the next fill holds
            // none (on tmpfs the pages are the file itself and cannot leave).
            if (new DriveInfo(spool).DriveFormat != "tmpfs")
            {
                var kept = Directory.GetFiles(spool, "*.spool");
                Assert.NotEmpty(kept);
                foreach (var file in kept)
                {
                    Assert.Equal(0, ResidentPages.BytesOfFile(file));
                }
            }
        }
    }

    [Fact]
    public async Task A_fill_whose_spool_writes_hang_is_given_up_after_the_stall_timeout_and_its_copy_goes_on()
    {
        // A spool device hung in a write holds the process's one spool writer: the copy loop of a fill whose buffers
        // all wait for it must not wait as long as the device hangs (its client with it).
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = Directory.CreateTempSubdirectory("sidekick-hung").FullName;
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        using var under = new FillsUnderTest(environment, time);
        const int Length = 64 * 1024 * 1024;
        var entry = new CachedResponse
        {
            Status = 200, Headers = [new("ETag", "\"hung\"")], Length = Length, ReceivedAt = time.GetUtcNow(), InitialAge = TimeSpan.Zero,
        };
        using (var held = new HeldSpoolWriter("/bucket/hung.bin"))
        {
            var opened = DirectSpoolWriter.Opened;
            var fill = under.Fills.Start("hung", "/bucket/hung.bin", entry, new Dictionary<string, string> { ["sidekick"] = entry.Serialize() })!;
            Assert.True(DirectSpoolWriter.Opened > opened, "the fill writes with O_DIRECT");
            var writer = fill.Writer(0, Length);
            var chunk = new byte[64 * 1024];
            var waiting = writer.WhenWritable();
            for (var offered = 0; waiting.IsCompleted && offered < Length; offered += chunk.Length)
            {
                Assert.True(writer.Offer(chunk));
                waiting = writer.WhenWritable();
            }

            await held.Held.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.False(waiting.IsCompleted, "the copy loop was never asked to wait for the held writer");

            time.Advance(DirectSpoolWriter.StallTimeout - TimeSpan.FromSeconds(1));
            Assert.False(waiting.IsCompleted);
            time.Advance(TimeSpan.FromSeconds(1));
            await waiting.AsTask().WaitAsync(TimeSpan.FromSeconds(30)); // woken: the copy goes on, without the fill

            Assert.True(fill.Abandoned);
            Assert.False(writer.Offer(chunk));
            Assert.Equal(["/bucket/hung.bin spool_error: the spool device took none of this fill's writes for 30 s; the client is served on from the origin"],
                under.Abandonments);
        }

        await fixture.Eventually(() => under.Fills.SpoolUsed == 0, "the hung fill's spool given back once the writer goes on");
    }

    [Fact]
    public async Task A_fill_handed_off_while_its_first_feeder_waits_for_the_spool_writer_lets_both_feeders_wait()
    {
        // A hand-off can come while the client's copy loop waits for the spool writer (the disk behind): the rest's
        // copy loop then waits on the same writer. The wait was one reusable source for one awaiter: the second
        // awaiter threw, the rest's exchange ended after its first bytes (the fill given up as origin_incomplete), and
        // the client's response could be cut where the hand-off came (seen under load: 13 of about 260 fills).
        var environment = fixture.Environment();
        var spool = Directory.CreateTempSubdirectory("sidekick-handoff-wait").FullName;
        if (!DirectIoSupported(spool))
        {
            return; // no spool writer to wait for
        }

        environment["SIDEKICK_CACHE_SPOOL_DIR"] = spool;
        using var under = new FillsUnderTest(environment);
        const int Length = 64 * 1024 * 1024;
        var body = System.Security.Cryptography.RandomNumberGenerator.GetBytes(Length);
        var entry = new CachedResponse
        {
            Status = 200, Headers = [new("ETag", "\"waits\"")], Length = Length, ReceivedAt = under.Time.GetUtcNow(), InitialAge = TimeSpan.Zero,
        };
        using var held = new HeldSpoolWriter("/bucket/waits.bin");
        var fill = under.Fills.Start("waits", "/bucket/waits.bin", entry, new Dictionary<string, string> { ["sidekick"] = entry.Serialize() })!;
        using var reading = fill.OpenReader(0, Length - 1)!; // a request reads the fill: it may be handed off
        var writer = fill.Writer(0, Length);
        var offered = 0;
        var first = writer.WhenWritable();
        for (; first.IsCompleted && offered < Length; offered += 64 * 1024)
        {
            Assert.True(writer.Offer(body.AsSpan(offered, 64 * 1024)));
            first = writer.WhenWritable();
        }

        await held.Held.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(first.IsCompleted, "the first feeder never waited for the held writer");

        // Handed off while the first feeder waits: the rest's feeder waits on the same writer.
        var rest = writer.HandOff();
        Assert.NotNull(rest);
        var second = rest.WhenWritable();
        Assert.False(second.IsCompleted, "the rest's feeder did not have to wait");

        held.Release();
        await Task.WhenAll(first.AsTask(), second.AsTask()).WaitAsync(TimeSpan.FromSeconds(30));
        for (; offered < Length; offered += 64 * 1024)
        {
            await rest.WhenWritable();
            Assert.True(rest.Offer(body.AsSpan(offered, 64 * 1024)));
        }

        rest.End(clientGone: false);
        var copy = new MemoryStream();
        await reading.CopyToAsync(copy);
        Assert.True(body.AsSpan().SequenceEqual(copy.ToArray()), "the fill holds the object, byte for byte");
        Assert.True(await fill.Upload.WaitAsync(TimeSpan.FromSeconds(60)), "the handed-off fill was not stored");
    }

    [Fact]
    public async Task A_stall_callback_of_an_earlier_wait_run_late_does_not_give_up_a_fill_that_moved_on()
    {
        // Disarming a timer does not stop a callback it already dispatched to the thread pool: the stall timer of a
        // wait that fires just as the writer takes a buffer may run only once the copy loop has moved on and waits
        // again. It must not give up that fill. The first wait's callback is run here by hand, late, as the pool would.
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = Directory.CreateTempSubdirectory("sidekick-stale-stall").FullName;
        var time = new ArmingsSeen(DateTimeOffset.UtcNow);
        using var under = new FillsUnderTest(environment, time);
        const int Length = 64 * 1024 * 1024;
        var entry = new CachedResponse
        {
            Status = 200, Headers = [new("ETag", "\"stale\"")], Length = Length, ReceivedAt = time.GetUtcNow(), InitialAge = TimeSpan.Zero,
        };
        using (var first = new HeldSpoolWriter("/bucket/stale.bin"))
        {
            var opened = DirectSpoolWriter.Opened;
            var fill = under.Fills.Start("stale", "/bucket/stale.bin", entry, new Dictionary<string, string> { ["sidekick"] = entry.Serialize() })!;
            Assert.True(DirectSpoolWriter.Opened > opened, "the fill writes with O_DIRECT");
            var writer = fill.Writer(0, Length);
            var chunk = new byte[64 * 1024];
            var offered = 0;
            ValueTask OfferUntilWaiting()
            {
                var waiting = time.Watching(writer.WhenWritable);
                for (; waiting.IsCompleted && offered < Length; offered += chunk.Length)
                {
                    Assert.True(writer.Offer(chunk));
                    waiting = time.Watching(writer.WhenWritable);
                }

                return waiting;
            }

            var waiting = OfferUntilWaiting();
            await first.Held.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.False(waiting.IsCompleted, "the copy loop was never asked to wait for the held writer");
            var (staleCallback, staleState) = Assert.Single(time.Armed); // the first wait's stall timer

            // The writer takes one buffer, which ends the first wait, and is held again before its next write.
            using var second = new HeldSpoolWriter("/bucket/stale.bin");
            first.Release();
            await waiting.AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            await second.Held.WaitAsync(TimeSpan.FromSeconds(30));
            var again = OfferUntilWaiting();
            Assert.False(again.IsCompleted, "the copy loop did not wait again");
            Assert.Equal(2, time.Armed.Count);

            staleCallback(staleState);
            Assert.False(fill.Abandoned, "the first wait's stall callback gave up the fill waiting again");
            Assert.False(again.IsCompleted);

            // The second wait's own timer still gives the fill up once that wait has lasted the whole timeout.
            time.Advance(DirectSpoolWriter.StallTimeout - TimeSpan.FromSeconds(1));
            Assert.False(again.IsCompleted);
            time.Advance(TimeSpan.FromSeconds(1));
            await again.AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(fill.Abandoned);
            Assert.Equal(["/bucket/stale.bin spool_error: the spool device took none of this fill's writes for 30 s; the client is served on from the origin"],
                under.Abandonments);
        }

        await fixture.Eventually(() => under.Fills.SpoolUsed == 0, "the fill's spool given back once the writer goes on");
    }

    /// <summary>
    /// A fake clock that records each timer armed (made or changed with a due time) by a call made through
    /// <see cref="Watching"/> on the test's thread: the timers that call armed, whatever other threads arm meanwhile.
    /// </summary>
    private sealed class ArmingsSeen(DateTimeOffset start) : Microsoft.Extensions.Time.Testing.FakeTimeProvider(start)
    {
        [ThreadStatic]
        private static bool t_watching;

        /// <summary>Each timer armed by a watched call, with what it would call back, in order.</summary>
        public System.Collections.Concurrent.ConcurrentQueue<(TimerCallback Callback, object? State)> Armed { get; } = new();

        public ValueTask Watching(Func<ValueTask> call)
        {
            t_watching = true;
            try
            {
                return call();
            }
            finally
            {
                t_watching = false;
            }
        }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Seen(callback, state, dueTime);
            return new SeenTimer(this, base.CreateTimer(callback, state, dueTime, period), callback, state);
        }

        private void Seen(TimerCallback callback, object? state, TimeSpan dueTime)
        {
            if (t_watching && dueTime != Timeout.InfiniteTimeSpan)
            {
                Armed.Enqueue((callback, state));
            }
        }

        private sealed class SeenTimer(ArmingsSeen clock, ITimer timer, TimerCallback callback, object? state) : ITimer
        {
            public bool Change(TimeSpan dueTime, TimeSpan period)
            {
                clock.Seen(callback, state, dueTime);
                return timer.Change(dueTime, period);
            }

            public void Dispose() => timer.Dispose();

            public ValueTask DisposeAsync() => timer.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_spool_writer_that_is_behind_pauses_its_fill_and_not_the_event_loop()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var big = backend.Put("/bucket/held-writer.bin", 12 * DirectBufferBudget.LargeBufferSize + 4097);
        var small = backend.Put("/bucket/uncached.bin", 1024, cacheControl: "no-store");
        var spool = Directory.CreateTempSubdirectory("sidekick-spool-held").FullName;
        if (!DirectIoSupported(spool))
        {
            return; // the fill would write through the page cache on the copy loop: nothing waits for the writer
        }

        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = spool;
        var (instance, client) = await fixture.StartSidekickAsync(backend, environment);
        await using var running = instance;
        var opened = DirectSpoolWriter.Opened;
        // A paced origin: the copy loop waits on its receive, whose completion runs it on the event loop's thread
        // (a copy that waited on the client's flush would go on on a pool thread, and block only that).
        backend.ChunkDelayMs = 2;

        // The process's one spool writer thread is held before its next write, as a hung spool device would hold it.
        using (var held = new HeldSpoolWriter("/bucket/held-writer.bin"))
        {
            using var miss = await client.GetAsync("/bucket/held-writer.bin", HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal("MISS", Outcome(miss));
            await using var body = await miss.Content.ReadAsStreamAsync();
            var received = new MemoryStream();
            var reading = body.CopyToAsync(received);
            await held.Held.WaitAsync(TimeSpan.FromSeconds(30));

            // The fill's buffers fill up behind the held writer: its copy stops short of the body.
            long seen = -1;
            while (seen != received.Length)
            {
                seen = received.Length;
                await Task.Delay(500);
            }

            Assert.True(received.Length < big.Body.Length, $"the client had all {received.Length} bytes while the writer was held");

            // Another client's uncached request, on the same event loop, is answered meanwhile.
            using var other = new HttpClient { BaseAddress = client.BaseAddress };
            using var answer = await other.GetAsync("/bucket/uncached.bin").WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(small.Body, await answer.Content.ReadAsByteArrayAsync());
            Assert.False(reading.IsCompleted);

            Assert.True(DirectSpoolWriter.Opened > opened, "the fill wrote with O_DIRECT");

            // Let the writer go: the fill completes, whole and stored.
            held.Release();
            await reading.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal(big.Body, received.ToArray());
        }

        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted == 1 && instance.Server.Cache.FillsInFlight == 0, "the fill stored");
        Assert.Equal(0, instance.Server.Cache!.Metrics.FillsAbandoned);
        using var hit = await client.GetAsync("/bucket/held-writer.bin");
        Assert.Equal("HIT", Outcome(hit));
        Assert.Equal(big.Body, await hit.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served("/bucket/held-writer.bin"));
    }

    internal static bool DirectIoSupported(string directory)
    {
        var probe = Path.Combine(directory, "probe");
        File.WriteAllBytes(probe, []);
        try
        {
            var fd = Sidekick.Platform.Libc.open(probe, Sidekick.Platform.Libc.O_WRONLY | Sidekick.Platform.Libc.O_DIRECT);
            if (fd >= 0)
            {
                using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
            }

            return fd >= 0;
        }
        finally
        {
            File.Delete(probe);
        }
    }

    [Fact]
    public async Task A_64_MiB_object_read_at_full_speed_by_curl_is_a_hit_the_second_time()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/big.parquet", 64 * 1024 * 1024);
        var spool = Directory.CreateTempSubdirectory("sidekick-spool-test").FullName;
        var environment = fixture.Environment();
        environment.Remove("SIDEKICK_CACHE_MIN_SIZE"); // the default minimum (1 MiB)
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = spool;
        var (instance, _) = await fixture.StartSidekickAsync([backend.Url], Integration.SidekickHarness.FastOptions, environment);
        await using var running = instance;
        var url = $"{instance.Server.BaseAddress}bucket/big.parquet";

        var (missHeaders, missBody) = await CurlAsync(url);
        Assert.Contains("X-Cache: MISS", missHeaders, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(SHA256.HashData(item.Body), SHA256.HashData(missBody));
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted >= 1, "the 64 MiB fill to reach the store");

        var (hitHeaders, hitBody) = await CurlAsync(url);
        Assert.Contains("X-Cache: HIT", hitHeaders, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(SHA256.HashData(item.Body), SHA256.HashData(hitBody));
        Assert.Equal(1, backend.Served("/bucket/big.parquet"));
        await fixture.Eventually(() => Directory.GetFiles(spool).Length == 0 && instance.Server.Cache!.Fills.SpoolUsed == 0, "the spool to be empty");
        Assert.Equal(0, instance.Server.Cache!.Metrics.FillsAbandoned);
    }

    [Fact]
    public async Task A_request_while_the_fill_runs_reads_the_fill()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/slow.bin", 4 * 1024 * 1024);
        backend.ChunkDelayMs = 20; // about 1.3 s for the whole body: the second request comes while it streams
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;

        using var first = await client.GetAsync("/bucket/slow.bin", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("MISS", Outcome(first));
        var firstBody = first.Content.ReadAsByteArrayAsync();
        await fixture.Eventually(() => instance.Server.Cache!.FillsInFlight == 1 && backend.Served("/bucket/slow.bin") == 1, "the fill to start");

        using var second = await client.GetAsync("/bucket/slow.bin", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Equal("HIT", Outcome(second));
        // Answered while the first response was still streaming: from the fill, not after it.
        Assert.False(firstBody.IsCompleted, "the first response had already ended");
        Assert.Equal(0, instance.Server.Cache!.Metrics.FillsCompleted);

        // A range while the fill still streams (the origin is paced), from the spool too.
        using var ranged = new HttpRequestMessage(HttpMethod.Get, "/bucket/slow.bin");
        ranged.Headers.Range = new System.Net.Http.Headers.RangeHeaderValue(3_000_000, 3_000_999);
        using var part = await client.SendAsync(ranged);
        Assert.Equal("HIT", Outcome(part));
        Assert.Equal(HttpStatusCode.PartialContent, part.StatusCode);
        Assert.Equal("bytes 3000000-3000999/4194304", part.Content.Headers.ContentRange!.ToString());
        Assert.Equal(item.Body.AsSpan(3_000_000, 1000).ToArray(), await part.Content.ReadAsByteArrayAsync());

        Assert.Equal(item.Body, await second.Content.ReadAsByteArrayAsync());
        Assert.Equal(item.Body, await firstBody);
        Assert.Equal(1, backend.Served("/bucket/slow.bin"));

        // Counted as what they were: one miss (the origin was asked once), two hits (found in the cache, its fill). A
        // hit is counted once it was served, after its last byte left, which the client may have read first.
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.Hits >= 2, "the two hits counted");
        Assert.Equal(2, instance.Server.Cache!.Metrics.Hits);
        Assert.Equal(1, instance.Server.Cache!.Metrics.Misses);
    }

    [Fact]
    public async Task A_fill_still_uploading_answers_from_its_spool_without_the_store_and_an_unsafe_request_drops_it()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        const string Path = "/bucket/uploading.bin";
        var item = backend.Put(Path, 12 * 1024 * 1024);
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var upload = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.PartsWaitFor = upload.Task; // the store takes no part: the entry stays uploading
        var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(relay.Url));
        await using var running = instance;
        var cache = instance.Server.Cache!;

        using (var first = await client.GetAsync(Path))
        {
            Assert.Equal("MISS", Outcome(first));
            Assert.Equal(item.Body, await first.Content.ReadAsByteArrayAsync());
        }

        await fixture.Eventually(() => relay.Requests.Any(r => r.StartsWith("POST /", StringComparison.Ordinal)), "the upload to begin");

        // The store, busy with uploads, is now too slow for any lookup: the spool holds the body and answers.
        var lookups = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.EntryLookupsWaitFor = lookups.Task;
        using (var second = await client.GetAsync(Path))
        {
            Assert.Equal("HIT", Outcome(second));
            Assert.Equal(item.Body, await second.Content.ReadAsByteArrayAsync());
        }

        using (var ranged = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, Path) { Headers = { Range = new System.Net.Http.Headers.RangeHeaderValue(5_000_000, 5_000_999) } }))
        {
            Assert.Equal("HIT", Outcome(ranged));
            Assert.Equal(item.Body.AsSpan(5_000_000, 1000).ToArray(), await ranged.Content.ReadAsByteArrayAsync());
        }

        Assert.True(cache.Health.Online, "a store lookup timed out");
        Assert.Equal(0, cache.Metrics.StoreErrors);
        Assert.Equal(1, backend.Served(Path));
        relay.EntryLookupsWaitFor = null;
        lookups.SetResult();

        // RFC 9111 §4.4: a successful unsafe request drops the entry, and with it the fill still uploading it: that
        // version neither answers from the spool nor lands in the store afterwards.
        using (var deleted = await client.DeleteAsync(Path))
        {
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        Assert.Equal(1, cache.Fills.AbandonedFor(FillAbandonReason.ObjectChanged));
        using (var gone = await client.GetAsync(Path))
        {
            Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        }

        upload.SetResult();
        await fixture.Eventually(() => cache.FillsInFlight == 0 && cache.Fills.SpoolUsed == 0, "the dropped fill to let its spool go");
        Assert.Equal(0, cache.Metrics.FillsCompleted);
    }

    [Fact]
    public async Task A_successful_unsafe_request_also_drops_the_fill_of_a_variant_still_uploading()
    {
        // A response with Vary fills under a variant key; the invalidation looked only under the plain key, so the
        // variant's fill went on and its version landed in the store after the delete, to be served again.
        await using var backend = await CacheTestBackend.StartAsync();
        const string Path = "/bucket/varied-uploading.bin";
        var item = backend.Put(Path, 12 * 1024 * 1024);
        item.Vary = "X-Tenant";
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var upload = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.PartsWaitFor = upload.Task; // the store takes no part: the variant stays uploading
        var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(relay.Url));
        await using var running = instance;
        var cache = instance.Server.Cache!;

        using (var first = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, Path) { Headers = { { "X-Tenant", "a" } } }))
        {
            Assert.Equal("MISS", Outcome(first));
            Assert.Equal(item.Body.Length + "[]".Length, (await first.Content.ReadAsByteArrayAsync()).Length); // the origin's variant: "[Accept-Encoding]" first
        }

        await fixture.Eventually(() => relay.Requests.Any(r => r.StartsWith("POST /", StringComparison.Ordinal)), "the upload to begin");
        using (var deleted = await client.DeleteAsync(Path))
        {
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        Assert.Equal(1, cache.Fills.AbandonedFor(FillAbandonReason.ObjectChanged));
        upload.SetResult();
        await fixture.Eventually(() => cache.FillsInFlight == 0 && cache.Fills.SpoolUsed == 0, "the dropped fill to let its spool go");
        Assert.Equal(0, cache.Metrics.FillsCompleted);
    }

    [Fact]
    public async Task A_fill_whose_origin_stalls_holds_the_requests_reading_it_no_longer_than_the_fill_read_timeout_and_the_origin_finishes_them()
    {
        // A fill stalls: its origin stops sending mid-body while the connection stays open (a fill held back by its
        // client instead is handed off, FillHandOffTests). The requests reading the fill waited as long as it liked,
        // and so did every retry of theirs. Now a reader that gets nothing for the fill read timeout has the rest of
        // its body from the origin (the same version, by Range and If-Match; counted and logged), and a later request
        // for the object is answered by the origin instead of joining the stalled fill.
        await using var backend = await CacheTestBackend.StartAsync();
        const string Path = "/bucket/stalled-origin.bin";
        var item = backend.Put(Path, 64 * 1024 * 1024);
        var originStalls = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        backend.FirstBodysLastChunkWaitsFor = originStalls.Task;
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        var (instance, client) = await fixture.StartSidekickAsync(backend, time: time);
        await using var running = instance;
        var cache = instance.Server.Cache!;

        // The first client reads all it is sent, on a connection of its own.
        using var firstClient = new HttpClient { BaseAddress = client.BaseAddress };
        using var first = await firstClient.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("MISS", Outcome(first));
        var firstRead = (await first.Content.ReadAsStreamAsync()).CopyToAsync(Stream.Null);
        CacheFill? fill = null;
        await fixture.Eventually(() => (fill = cache.Fills.Running(CacheKey.For(client.BaseAddress!.Authority, Path))) is not null, "the first client's fill");
        var written = await StalledAsync(fill!, "its origin");

        Assert.True(written < item.Body.Length);

        using var reader = await client.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("HIT", Outcome(reader));
        var body = await reader.Content.ReadAsStreamAsync();
        var read = 0L;
        var buffer = new byte[1 << 20];
        var whole = new MemoryStream();
        while (read < written)
        {
            var got = await body.ReadAsync(buffer);
            whole.Write(buffer, 0, got);
            read += got;
        }

        time.Advance(StoredResponseWriter.FillReadIdleTimeout + TimeSpan.FromSeconds(1));
        // The server may not be waiting for the spool's next byte yet when the clock moves (its last bytes still on
        // their way to this client): its idle timer would then start after the move and never fire. So the clock goes
        // on moving, a second at a time, until the reader is cut.
        using var cut = new CancellationTokenSource();
        var ticking = Task.Run(async () =>
        {
            while (!cut.IsCancellationRequested)
            {
                await Task.Delay(100);
                time.Advance(TimeSpan.FromSeconds(1));
            }
        });
        // Bounded in real time only so that a reader that never goes on fails the test instead of hanging it.
        int more;
        while ((more = await body.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(60))) > 0)
        {
            whole.Write(buffer, 0, more);
        }

        await cut.CancelAsync();
        await ticking;
        Assert.Equal(item.Body, whole.ToArray());
        Assert.Contains(backend.Log, line => line.Contains($"range=bytes={read}-{item.Body.Length - 1} if-none-match= if-match={item.ETag} -> 206", StringComparison.Ordinal));
        Assert.Equal(1, cache.Metrics.FillReadsFromOrigin);
        Assert.Equal(0, cache.Metrics.FillReadsCut);
        var state = System.Text.Json.JsonDocument.Parse(await client.GetStringAsync("/v1/state")).RootElement.GetProperty("cache");
        Assert.Equal(1, state.GetProperty("fillReadsFromOrigin").GetInt64());

        using var later = await client.GetAsync(Path);
        Assert.Equal(HttpStatusCode.OK, later.StatusCode);
        Assert.Equal(item.Body, await later.Content.ReadAsByteArrayAsync());
        Assert.Equal(2, backend.Served(Path));
        Assert.Equal(0, cache.Metrics.FillsHandedOff); // the origin, not the client, held the fill

        originStalls.SetResult();
        await firstRead;
    }

    /// <summary>
    /// Waits until <paramref name="fill"/> stopped growing (no byte written for three looks 200 ms apart): stalled
    /// behind <paramref name="behind"/>. Returns the bytes it holds.
    /// </summary>
    internal static async Task<long> StalledAsync(CacheFill fill, string behind)
    {
        var (written, unchanged) = (-1L, 0);
        for (var look = 0; unchanged < 3; look++)
        {
            Assert.True(look < 300, $"the fill never stalled behind {behind}");
            await Task.Delay(200);
            (written, unchanged) = fill.Written == written ? (written, unchanged + 1) : (fill.Written, 0);
        }

        return written;
    }

    [Fact]
    public async Task A_fill_with_no_room_in_the_spool_is_counted_and_logged_by_reason()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/too-big.bin", 4 * 1024 * 1024);
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_SIZE"] = "1MiB";
        var output = new StringWriter();
        var options = Integration.SidekickHarness.FastOptions with { Log = true };
        var (instance, client) = await fixture.StartSidekickAsync([backend.Url], options, environment, TextWriter.Synchronized(output));
        await using var running = instance;

        using var response = await client.GetAsync("/bucket/too-big.bin");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(4 * 1024 * 1024, (await response.Content.ReadAsByteArrayAsync()).Length);

        var metrics = await client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains("sidekick_cache_fills_abandoned_total{reason=\"spool_full\"} 1", metrics, StringComparison.Ordinal);
        await fixture.Eventually(() => output.ToString().Contains("cache fill of /bucket/too-big.bin abandoned (spool_full)", StringComparison.Ordinal),
            "the --log line for the abandoned fill");
    }

    [Fact]
    public async Task A_body_larger_than_the_spool_disks_free_space_is_refused_as_spool_full_whatever_the_budget()
    {
        var spool = Directory.CreateTempSubdirectory("sidekick-spool-disk").FullName;
        // Every spool file made: a fallocate of more than the disk holds takes the whole disk before it fails (on ext4
        // until the file is gone), so that every other writer on the host meets a full disk. It must not be tried.
        var created = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var watcher = new FileSystemWatcher(spool) { EnableRaisingEvents = true };
        watcher.Created += (_, e) => created.Enqueue(e.Name ?? "");
        var free = new DriveInfo(spool).AvailableFreeSpace;
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = spool;
        environment["SIDEKICK_CACHE_SPOOL_SIZE"] = (4 * (free + (1L << 40))).ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var under = new FillsUnderTest(environment);
        var fills = under.Fills;
        var entry = new CachedResponse
        {
            Status = 200, Headers = [new("ETag", "\"v1\"")], Length = free + (1L << 40), ReceivedAt = DateTimeOffset.UtcNow, InitialAge = TimeSpan.Zero,
        };

        Assert.Null(fills.Start("too-big-for-the-disk", "/too-big", entry, new Dictionary<string, string> { ["sidekick"] = entry.Serialize() }));

        // The budget had room: the disk had not. A full spool, not a failed one, and the slot is free again.
        Assert.Equal(1, fills.AbandonedFor(FillAbandonReason.SpoolFull));
        Assert.Equal(0, fills.AbandonedFor(FillAbandonReason.SpoolError));
        Assert.Equal(0, fills.InFlight);
        Assert.Contains($"/too-big spool_full: the spool directory {spool} has ", Assert.Single(under.Abandonments), StringComparison.Ordinal);

        // A small fill's file is the marker: the watcher reports in order, so the refused fill's file would come first.
        var small = entry with { Length = 4096 };
        var marker = fills.Start("small", "/small", small, new Dictionary<string, string> { ["sidekick"] = small.Serialize() })!;
        await Eventually.WaitUntilAsync(() => !created.IsEmpty, what: "the small fill's spool file seen by the watcher");
        marker.Abandon(FillAbandonReason.ClientGone, "test over");
        Assert.False(await marker.Upload);
        Assert.Single(created);
        Directory.Delete(spool, recursive: true);
    }

    [Fact]
    public async Task Two_sidecars_sharing_a_bucket_share_the_entries()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/shared.bin", 2 * 1024 * 1024);
        var (one, oneClient) = await fixture.StartSidekickAsync(backend);
        await using var first = one;
        var (two, twoClient) = await fixture.StartSidekickAsync(backend);
        await using var second = two;

        // Entries are keyed by Host and target: the sidecars' clients use the same endpoint name.
        oneClient.DefaultRequestHeaders.Host = "minio.example:9000";
        twoClient.DefaultRequestHeaders.Host = "minio.example:9000";
        using (var miss = await oneClient.GetAsync("/bucket/shared.bin"))
        {
            Assert.Equal("MISS", Outcome(miss));
            Assert.Equal(item.Body, await miss.Content.ReadAsByteArrayAsync());
        }

        await fixture.Eventually(() => one.Server.Cache!.Metrics.FillsCompleted >= 1, "the fill through the first sidecar");
        using var hit = await twoClient.GetAsync("/bucket/shared.bin");
        Assert.Equal("HIT", Outcome(hit));
        Assert.Equal(item.Body, await hit.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served("/bucket/shared.bin"));
    }

    [Fact]
    public async Task The_removed_max_lag_setting_is_refused_with_its_replacement_named()
    {
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_MAX_LAG"] = "64MiB";
        var error = Assert.Throws<Sidekick.Cli.UsageException>(() => Sidekick.Caching.CacheOptions.FromEnvironment(environment));
        Assert.Contains("SIDEKICK_CACHE_SPOOL_SIZE", error.Message, StringComparison.Ordinal);
    }

    /// <summary>curl at full speed, as a user would read the object: the response head and the body.</summary>
    private static async Task<(string Headers, byte[] Body)> CurlAsync(string url)
    {
        var body = Path.GetTempFileName();
        var headers = Path.GetTempFileName();
        try
        {
            using var curl = Process.Start(new ProcessStartInfo("curl", ["-sS", "--fail", "-o", body, "-D", headers, url]) { RedirectStandardError = true })!;
            var stderr = await curl.StandardError.ReadToEndAsync();
            await curl.WaitForExitAsync();
            Assert.True(curl.ExitCode == 0, $"curl exited {curl.ExitCode}: {stderr}");
            return (await File.ReadAllTextAsync(headers), await File.ReadAllBytesAsync(body));
        }
        finally
        {
            File.Delete(body);
            File.Delete(headers);
        }
    }
}
