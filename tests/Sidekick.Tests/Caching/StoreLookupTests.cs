using Amazon.Runtime;
using Amazon.S3.Model;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Every miss asks the store for objects that are not there (the entry, and on s3rver its lease): that answer is
/// the common one, and it must not cost an exception thrown through the SDK's pipeline.
/// </summary>
public sealed class StoreLookupTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private static readonly AsyncLocal<bool> s_watching = new();

    [Fact]
    public async Task Refreshed_headers_are_written_to_the_bucket_once_per_interval_per_entry()
    {
        // S3 changes an object's metadata only by copying the object onto itself: every 304 writing its refreshed
        // headers back rewrote the whole entry (a 2 GiB object read again in 256 signed ranges: 256 copies).
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        using var under = new FillsUnderTest(fixture.Environment(relay.Url), time);
        var store = under.Store;
        using var health = new CacheHealth(store, under.Metrics, TimeSpan.FromMinutes(1), time);
        var entries = new CacheEntries(under.Options, store, health, under.Fills, under.Metrics, time);
        var key = "refreshed-" + Guid.NewGuid().ToString("N");
        await store.PutAsync(key, new byte[10], new Dictionary<string, string> { ["sidekick"] = "stored" }, CancellationToken.None);
        var storeETag = (await store.HeadAsync(key, CancellationToken.None))!.Value.StoreETag;
        CachedResponse Refreshed() => new()
        {
            Status = 200, Headers = [new("ETag", "\"r1\"")], Length = 10, ReceivedAt = time.GetUtcNow(), InitialAge = TimeSpan.Zero,
        };
        var stored = relay.Requests.Count(r => r == $"PUT /{CacheFixture.Bucket}/{CacheFixture.ObjectName(key)}");
        int Writes() => relay.Requests.Count(r => r == $"PUT /{CacheFixture.Bucket}/{CacheFixture.ObjectName(key)}") - stored;

        for (var i = 0; i < 5; i++)
        {
            await entries.UpdateMetadataAsync(key, Refreshed(), storeETag);
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Equal(1, Writes());
        Assert.Equal("\"r1\"", (await store.HeadAsync(key, CancellationToken.None))!.Value.Entry!.ETag);
        time.Advance(CacheEntries.RefreshWriteInterval);
        await entries.UpdateMetadataAsync(key, Refreshed(), storeETag);
        Assert.Equal(2, Writes());
    }

    [Fact]
    public async Task A_metadata_update_changes_the_stored_entry_and_keeps_its_body_but_never_lands_on_another_version()
    {
        // The refresh after a 304 copies the entry onto itself with new metadata (s3rver could not read the SDK's copy
        // source: every refresh failed as "NoSuchBucket"). It must not land on a version another sidecar stored since the
        // lookup: the old version's headers (length, ETag) would then describe the new bytes.
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url); // S3's preconditions, which s3rver ignores
        using var store = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment(relay.Url))!);
        using var s3 = fixture.Client();
        var key = $"update-{Guid.NewGuid():N}";
        byte[] body = [1, 2, 3, 4, 5];
        await store.PutAsync(key, body, new Dictionary<string, string> { ["sidekick"] = "before" }, CancellationToken.None);
        var looked = (await store.HeadAsync(key, CancellationToken.None))!.Value.StoreETag!;

        Assert.True(await store.UpdateMetadataAsync(key, looked, new Dictionary<string, string> { ["sidekick"] = "after" }, CancellationToken.None));
        Assert.Equal(("after", Convert.ToHexString(body)), await StoredAsync());

        byte[] newer = [9, 9, 9];
        await store.PutAsync(key, newer, new Dictionary<string, string> { ["sidekick"] = "newer" }, CancellationToken.None);
        Assert.False(await store.UpdateMetadataAsync(key, looked, new Dictionary<string, string> { ["sidekick"] = "stale" }, CancellationToken.None));
        Assert.Equal(("newer", Convert.ToHexString(newer)), await StoredAsync());

        await store.DeleteAsync(key, CancellationToken.None);
        Assert.False(await store.UpdateMetadataAsync(key, looked, new Dictionary<string, string> { ["sidekick"] = "gone" }, CancellationToken.None));

        async Task<(string Metadata, string Body)> StoredAsync()
        {
            using var stored = await s3.GetObjectAsync(CacheFixture.Bucket, CacheFixture.ObjectName(key));
            using var copy = new MemoryStream();
            await stored.ResponseStream.CopyToAsync(copy);
            return (stored.Metadata["sidekick"], Convert.ToHexString(copy.ToArray()));
        }
    }

    [Fact]
    public async Task An_object_that_is_not_there_is_looked_up_without_an_exception()
    {
        using var store = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        var thrown = new List<string>();
        void Record(object? sender, System.Runtime.ExceptionServices.FirstChanceExceptionEventArgs e)
        {
            // Only this test's own calls (the flag flows with them): other tests in the process use the SDK too.
            if (s_watching.Value && e.Exception is AmazonServiceException or HttpRequestException)
            {
                lock (thrown)
                {
                    thrown.Add($"{e.Exception.GetType().Name}: {e.Exception.Message}");
                }
            }
        }

        AppDomain.CurrentDomain.FirstChanceException += Record;
        try
        {
            s_watching.Value = true;
            var key = $"absent-{Guid.NewGuid():N}";
            Assert.Null(await store.HeadAsync(key, default));
            Assert.Null(await store.LookAsync(key, openBody: true, range: null, default)); // a whole GET's lookup
            Assert.Null(await store.LookAsync(key, openBody: true, new System.Net.Http.Headers.RangeItemHeaderValue(0, 9), default));
            Assert.Null(await store.ReadLeaseAsync(key + ".fill", default));
        }
        finally
        {
            s_watching.Value = false;
            AppDomain.CurrentDomain.FirstChanceException -= Record;
        }

        Assert.Empty(thrown);
    }

    [Fact]
    public async Task A_get_found_in_the_store_asks_it_once_whole_or_ranged_and_a_revalidation_only_looks_it_up()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/once-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 2 * 1024 * 1024 + 1);
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(relay.Url));
        await using var running = instance;
        client.DefaultRequestHeaders.Host = "minio.example:9000";
        using (var miss = await client.GetAsync(path))
        {
            Assert.Equal(item.Body, await miss.Content.ReadAsByteArrayAsync());
        }

        var cache = instance.Server.Cache!;
        await Eventually.WaitUntilAsync(() => cache.Metrics.FillsCompleted == 1 && cache.FillsInFlight == 0, what: "the fill stored");
        var entry = $"/{CacheFixture.Bucket}/{CacheFixture.ObjectName(CacheKey.For("minio.example:9000", path))}";
        string[] Asked(int since) => relay.Requests.Skip(since).Where(r => r.EndsWith(entry, StringComparison.Ordinal)).ToArray();

        var before = relay.Requests.Count();
        using (var hit = await client.GetAsync(path))
        {
            Assert.Equal("HIT", string.Join(",", hit.Headers.GetValues("X-Cache")));
            Assert.Equal(item.Body, await hit.Content.ReadAsByteArrayAsync());
        }

        Assert.Equal([$"GET {entry}"], Asked(before));

        before = relay.Requests.Count();
        var range = new HttpRequestMessage(HttpMethod.Get, path) { Headers = { Range = new System.Net.Http.Headers.RangeHeaderValue(10, 19) } };
        using (var ranged = await client.SendAsync(range))
        {
            Assert.Equal("HIT", string.Join(",", ranged.Headers.GetValues("X-Cache")));
            Assert.Equal(item.Body.AsSpan(10, 10).ToArray(), await ranged.Content.ReadAsByteArrayAsync());
        }

        Assert.Equal([$"GET {entry}"], Asked(before));

        // A suffix range: looked up with a HEAD, then read as the bytes it names in the entry.
        before = relay.Requests.Count();
        using (var suffix = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, path) { Headers = { Range = new System.Net.Http.Headers.RangeHeaderValue(null, 5) } }))
        {
            Assert.Equal("HIT", string.Join(",", suffix.Headers.GetValues("X-Cache")));
            Assert.Equal(item.Body.AsSpan(item.Body.Length - 5).ToArray(), await suffix.Content.ReadAsByteArrayAsync());
        }

        Assert.Equal([$"HEAD {entry}", $"GET {entry}"], Asked(before));

        // The client's own validator: most often answered 304 without a body, so looked up with a HEAD.
        before = relay.Requests.Count();
        var revalidating = new HttpRequestMessage(HttpMethod.Get, path);
        using (var current = await client.GetAsync(path))
        {
            revalidating.Headers.TryAddWithoutValidation("If-None-Match", string.Join(",", current.Headers.GetValues("ETag")));
        }

        before = relay.Requests.Count();
        using (var notModified = await client.SendAsync(revalidating))
        {
            Assert.Equal(System.Net.HttpStatusCode.NotModified, notModified.StatusCode);
        }

        Assert.Equal([$"HEAD {entry}"], Asked(before));
        Assert.Equal(1, backend.Served(path));
    }

    [Fact]
    public async Task An_object_whose_metadata_names_the_absent_mark_with_another_value_is_found()
    {
        // Whoever can write to the bucket cannot make an entry look absent: the mark's value is drawn per process.
        var key = $"marked-{Guid.NewGuid():N}";
        using (var s3 = fixture.Client())
        {
            var put = new PutObjectRequest { BucketName = CacheFixture.Bucket, Key = CacheFixture.ObjectName(key), ContentBody = "x", UseChunkEncoding = false };
            put.Metadata[StoreHttpClients.AbsentAsAnswer.AbsentMetadata] = "0123456789abcdef0123456789abcdef";
            put.Metadata[S3CacheStore.VaryMetadata] = "Accept";
            await s3.PutObjectAsync(put);
        }

        using var store = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        var found = await store.HeadAsync(key, default);
        Assert.NotNull(found);
        Assert.Equal("Accept", found.Value.VaryNames);
    }

    [Fact]
    public async Task Deleting_an_entry_deletes_every_variant_past_the_first_page_of_the_listing()
    {
        // A listing returns 1,000 names at most: an entry that varies on a field with many values (User-Agent, Origin)
        // had the variants past the first page left behind, to be served again after an invalidation. Pages of 2 here.
        using var store = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!) { VariantsListedAtOnce = 2 };
        var key = $"many-variants-{Guid.NewGuid():N}";
        using (var s3 = fixture.Client())
        {
            await Parallel.ForEachAsync(Enumerable.Range(0, 5), new ParallelOptions { MaxDegreeOfParallelism = 1 }, async (i, token) =>
                await s3.PutObjectAsync(new PutObjectRequest
                {
                    BucketName = CacheFixture.Bucket,
                    Key = CacheFixture.ObjectName(CacheKey.Variant(key, [i.ToString(System.Globalization.CultureInfo.InvariantCulture)])),
                    ContentBody = "v",
                    UseChunkEncoding = false,
                }, token));
        }

        await store.DeleteEntryAsync(key, CancellationToken.None);

        using (var s3 = fixture.Client())
        {
            var left = await s3.ListObjectsV2Async(new ListObjectsV2Request
            {
                BucketName = CacheFixture.Bucket,
                Prefix = CacheFixture.ObjectName(CacheKey.VariantPrefix(key)),
            });
            Assert.Empty(left.S3Objects ?? []);
        }
    }
}
