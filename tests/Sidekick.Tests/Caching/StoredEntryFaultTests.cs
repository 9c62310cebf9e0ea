using System.Net;
using System.Net.Http.Headers;
using Sidekick.Caching;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A stored object that does not hold the body its entry's metadata describes (a store that lost the tail, another
/// writer's bytes under the same metadata): a fault of that one entry. It is never served cut short or padded with
/// other bytes to one client after another, and it never takes the store offline: the entry is evicted, the request
/// that found it is answered by the origin, and the next one fills the entry again.
/// </summary>
public sealed class StoredEntryFaultTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const string Host = "minio.example:9000";

    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    [Fact]
    public async Task A_stored_object_shorter_than_its_metadata_is_a_miss_and_evicted_not_served_cut_short()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/truncated-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 4 * 1024 * 1024, "max-age=3600");
        var (instance, client) = await StartAsync(backend);
        await using var running = instance;
        await StoredAsync(instance, client, path, item.Body);

        await ReplaceStoredBodyAsync(path, item.Body[..(1024 * 1024)]);

        var outcomes = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            using var response = await client.GetAsync(path, HttpCompletionOption.ResponseHeadersRead);
            var failure = await Record.ExceptionAsync(async () => Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync()));
            outcomes.Add($"request {i + 1}: X-Cache {Outcome(response)}{(failure is null ? "" : ", " + failure.GetType().Name)}");
            Assert.True(failure is null, "a client got a cut body from a short stored object: " + string.Join("; ", outcomes));
        }

        // The first request found the fault: a miss, answered by the origin, that stored the entry again.
        Assert.Equal(["request 1: X-Cache MISS", "request 2: X-Cache HIT", "request 3: X-Cache HIT"], outcomes);
        Assert.Equal(1, instance.Server.Cache!.Metrics.Evictions);
        Assert.True(instance.Server.Cache.Health.Online);
    }

    [Fact]
    public async Task A_stored_object_longer_than_its_metadata_is_a_miss_and_evicted_not_served_by_its_first_bytes()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/longer-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 2 * 1024 * 1024, "max-age=3600");
        var (instance, client) = await StartAsync(backend);
        await using var running = instance;
        await StoredAsync(instance, client, path, item.Body);

        // Another writer's bytes under the entry's metadata, longer than the entry: its first bytes are not the entry's.
        var other = new byte[item.Body.Length + 4096];
        Array.Fill(other, (byte)0x5A);
        await ReplaceStoredBodyAsync(path, other);

        using var response = await client.GetAsync(path);
        Assert.Equal("MISS", Outcome(response));
        Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, instance.Server.Cache!.Metrics.Evictions);
        Assert.Equal(2, backend.Served(path));
    }

    [Fact]
    public async Task A_416_from_the_store_for_one_short_entry_does_not_take_the_store_offline()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/short-range-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 4 * 1024 * 1024 + 1, "max-age=3600");
        var (instance, client) = await StartAsync(backend);
        await using var running = instance;
        var cache = instance.Server.Cache!;
        await StoredAsync(instance, client, path, item.Body);

        await ReplaceStoredBodyAsync(path, item.Body[..(1024 * 1024)]);

        using var ranged = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, path) { Headers = { Range = new RangeHeaderValue(2_000_000, 2_000_099) } });
        Assert.Equal(HttpStatusCode.PartialContent, ranged.StatusCode);
        Assert.Equal(item.Body.AsSpan(2_000_000, 100).ToArray(), await ranged.Content.ReadAsByteArrayAsync());
        Assert.True(cache.Health.Online, "one entry's 416 took the whole store offline: " + Outcome(ranged));
        Assert.Equal(1, cache.Metrics.Evictions);
    }

    /// <summary>
    /// A request with the client's own validator and a range is looked up with a HEAD, which finds the whole entry;
    /// before its GET of the range, the object under the key is cut short (another sidecar's shorter version, a lost
    /// tail). The store answers that GET 416: this entry's fault, not the store's.
    /// </summary>
    [Fact]
    public async Task A_416_for_an_entry_cut_short_between_its_lookup_and_its_read_evicts_it_and_leaves_the_store_online()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/cut-under-read-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 3 * 1024 * 1024, "max-age=3600");
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (instance, client) = await StartAsync(backend, relay.Url);
        await using var running = instance;
        var cache = instance.Server.Cache!;
        await StoredAsync(instance, client, path, item.Body);

        relay.BeforeNextEntryRead = () => ReplaceStoredBodyAsync(path, item.Body[..(1024 * 1024)]);
        var request = new HttpRequestMessage(HttpMethod.Get, path) { Headers = { Range = new RangeHeaderValue(2_000_000, 2_000_099) } };
        request.Headers.TryAddWithoutValidation("If-None-Match", "\"an-older-copy\"");
        using var ranged = await client.SendAsync(request);

        Assert.Null(relay.BeforeNextEntryRead); // the object was cut under the read
        Assert.Equal(HttpStatusCode.PartialContent, ranged.StatusCode);
        Assert.Equal(item.Body.AsSpan(2_000_000, 100).ToArray(), await ranged.Content.ReadAsByteArrayAsync());
        Assert.True(cache.Health.Online, $"one entry's 416 took the whole store offline: {Outcome(ranged)}");
        Assert.Equal(1, cache.Metrics.Evictions);
    }

    /// <summary>
    /// A HIT's read breaks midway, and the object the read resumes from holds the entry's metadata over fewer bytes:
    /// that client is cut (its headers are out), but the entry goes, so the next client is not cut at the same byte.
    /// </summary>
    [Fact]
    public async Task A_stored_body_found_short_when_its_read_resumes_is_finished_from_the_origin_and_its_entry_evicted()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/short-on-resume-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 3 * 1024 * 1024 + 7, "max-age=3600");
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (instance, client) = await StartAsync(backend, relay.Url);
        await using var running = instance;
        var cache = instance.Server.Cache!;
        await StoredAsync(instance, client, path, item.Body);

        // The lookup's GET (whole, unranged) breaks after 512 KiB; before the ranged GET that resumes it, the object
        // is cut to 1 MiB under the same metadata.
        relay.CutReads(512 * 1024 + 3);
        relay.BeforeNextEntryRead = () => ReplaceStoredBodyAsync(path, item.Body[..(1024 * 1024)]);
        using (var broken = await client.GetAsync(path, HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal("HIT", Outcome(broken));
            // Not the short object's bytes past the break: the rest of the version stored, from the origin.
            Assert.Equal(item.Body, await broken.Content.ReadAsByteArrayAsync());
        }

        await Eventually.WaitUntilAsync(() => cache.Metrics.StoredReadsFromOrigin == 1, what: "the read finished from the origin counted");
        await Eventually.WaitUntilAsync(() => cache.Metrics.Evictions == 1, 10_000,
            what: $"the short entry evicted (the store saw: {string.Join(", ", relay.Requests)})");

        using var next = await client.GetAsync(path);
        Assert.Equal("MISS", Outcome(next));
        Assert.Equal(item.Body, await next.Content.ReadAsByteArrayAsync());
        Assert.True(cache.Health.Online);
    }

    private async Task<(SidekickInstance Instance, HttpClient Client)> StartAsync(CacheTestBackend backend, Uri? store = null)
    {
        var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(store));
        client.DefaultRequestHeaders.Host = Host;
        return (instance, client);
    }

    private static async Task StoredAsync(SidekickInstance instance, HttpClient client, string path, byte[] body)
    {
        using var miss = await client.GetAsync(path);
        Assert.Equal("MISS", Outcome(miss));
        Assert.Equal(body, await miss.Content.ReadAsByteArrayAsync());
        var cache = instance.Server.Cache!;
        await Eventually.WaitUntilAsync(() => cache.Metrics.FillsCompleted == 1 && cache.FillsInFlight == 0, what: "the fill stored");
    }

    /// <summary>Puts <paramref name="body"/> under the entry of <paramref name="path"/>, its metadata unchanged: what its metadata says of it is false now.</summary>
    private async Task ReplaceStoredBodyAsync(string path, byte[] body)
    {
        using var store = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        var key = CacheKey.For(Host, path);
        string serialized;
        using (var current = await store.OpenAsync(key, 0, 0, default))
        {
            serialized = current!.Head.Metadata(S3CacheStore.EntryMetadata)!;
        }

        var metadata = new Dictionary<string, string> { [S3CacheStore.EntryMetadata] = serialized };
        await store.PutAsync(key, body, metadata, default);
    }
}
