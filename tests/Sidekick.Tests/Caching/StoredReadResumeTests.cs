using System.Net;
using System.Net.Http.Headers;
using Sidekick.Caching;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A HIT's body comes from the store over a connection of its own. When that read breaks midway (a store
/// connection reset, or s3rver rewriting the object in place while another sidecar stores the same version), the
/// headers are already out: sidekick resumes from the first byte it has not sent, and only when the store cannot
/// give the same bytes back is the client's response cut, never ended short as if whole.
/// </summary>
public sealed class StoredReadResumeTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    [Fact]
    public async Task A_stored_body_whose_read_breaks_midway_is_resumed_and_the_client_gets_every_byte()
    {
        await using var setup = await StoredObjectAsync("resumed", 3 * 1024 * 1024 + 17);
        var (backend, relay, instance, client, path, item) = setup;

        relay.CutReads(1024 * 1024 + 5);
        using var whole = await client.GetAsync(path);
        Assert.Equal("HIT", Outcome(whole));
        Assert.Equal(item.Body, await whole.Content.ReadAsByteArrayAsync());

        relay.CutReads(256 * 1024 + 3);
        using var ranged = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, path) { Headers = { Range = new RangeHeaderValue(100, 2_999_999) } });
        Assert.Equal(HttpStatusCode.PartialContent, ranged.StatusCode);
        Assert.Equal("HIT", Outcome(ranged));
        Assert.Equal(item.Body.AsSpan(100, 2_999_900).ToArray(), await ranged.Content.ReadAsByteArrayAsync());

        Assert.True(relay.ReadsCut == 2, $"cut {relay.ReadsCut}; the store saw: {string.Join(", ", relay.Requests)}");
        // A break can also come before the store client has handed over the body, which it then retries on its own.
        Assert.InRange(instance.Server.Cache!.Metrics.StoredReadsResumed, 1, 2);
        Assert.Equal(0, instance.Server.Cache.Metrics.StoredReadsCut);
        Assert.Equal(1, backend.Served(path)); // resumed from the store: the origin was not asked again
    }

    [Fact]
    public async Task A_stored_body_that_stalls_midway_is_resumed_once_the_store_sent_nothing_for_the_idle_timeout()
    {
        // The process runs on a fake clock: the idle timeout fires when the test moves the clock past it, not after 15 s.
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var setup = await StoredObjectAsync("stalled", 3 * 1024 * 1024 + 5, time: time);
        var (backend, relay, instance, client, path, item) = setup;

        relay.StallReads(512 * 1024 + 7);
        var hit = client.GetAsync(path);
        await Eventually.WaitUntilAsync(() => relay.ReadsStalled == 1, what: "the store to stall mid-body");
        time.Advance(StoredResponseWriter.StoredReadIdleTimeout - TimeSpan.FromSeconds(1));
        Assert.False(hit.IsCompleted); // not yet given up on

        // Past the timeout, and on through the short waits before each attempt to reopen.
        var deadline = Environment.TickCount64 + 30_000;
        while (!hit.IsCompleted && Environment.TickCount64 < deadline)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(20);
        }

        Assert.True(hit.IsCompleted, $"the stalled read was never resumed; the store saw: {string.Join(", ", relay.Requests)}");
        using var response = await hit;
        Assert.Equal("HIT", Outcome(response));
        Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, instance.Server.Cache!.Metrics.StoredReadsResumed);
        Assert.Equal(0, instance.Server.Cache.Metrics.StoredReadsCut);
        Assert.Equal(1, backend.Served(path));
    }

    [Fact]
    public async Task A_stored_body_that_cannot_be_resumed_is_finished_from_the_origin_with_the_same_versions_bytes()
    {
        await using var setup = await StoredObjectAsync("from-origin", 2 * 1024 * 1024);
        var (backend, relay, instance, client, path, item) = setup;

        // The first read breaks after 64 KiB, and every read after it before a byte: the store cannot resume it.
        relay.CutReads(64 * 1024);
        relay.CutEveryRead(0);
        using var response = await client.GetAsync(path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("HIT", Outcome(response));
        // Before, the response was cut after the 64 KiB; now the origin sends the rest, of the version stored.
        Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync());

        var rest = Assert.Single(backend.Log, line => line.Contains("range=bytes=", StringComparison.Ordinal));
        // From the first byte the client had not got (where the relay's cut fell in the store's answer, near 64 KiB).
        Assert.Matches($"^GET {path} range=bytes=[1-9][0-9]*-{item.Body.Length - 1} if-none-match= if-match={item.ETag} -> 206$", rest);
        Assert.Equal(1, backend.Served(path)); // the whole body only for the miss
        await Eventually.WaitUntilAsync(() => instance.Server.Cache!.Metrics.StoredReadsFromOrigin == 1, what: "the read finished from the origin counted");
        Assert.Equal(0, instance.Server.Cache!.Metrics.StoredReadsCut);
        Assert.Contains("sidekick_cache_store_reads_broken_total{outcome=\"from_origin\"} 1\n", await client.GetStringAsync("/.prometheus/metrics"), StringComparison.Ordinal);
        var state = System.Text.Json.JsonDocument.Parse(await client.GetStringAsync("/v1/state")).RootElement.GetProperty("cache");
        Assert.Equal(1, state.GetProperty("storeReadsBroken").GetProperty("fromOrigin").GetInt64());
        Assert.True(relay.ReadsCut > StoredResponseWriter.MaxResumesWithoutProgress); // the store was asked again first
    }

    [Fact]
    public async Task A_client_that_leaves_while_the_origin_is_silent_on_the_rest_of_its_body_lets_go_of_the_backend()
    {
        await using var setup = await StoredObjectAsync("silent-rest", 2 * 1024 * 1024);
        var (backend, relay, instance, client, path, item) = setup;

        // The store cannot finish the body, and the origin takes the request for the rest and says nothing.
        var silent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        backend.HeadsWaitFor = silent.Task;
        relay.CutReads(64 * 1024);
        relay.CutEveryRead(0);
        var response = await client.GetAsync(path, HttpCompletionOption.ResponseHeadersRead);
        var body = await response.Content.ReadAsStreamAsync();
        await body.ReadAtLeastAsync(new byte[1024], 1024);
        await Eventually.WaitUntilAsync(() => backend.Arrivals.Count(a => a == $"GET {path}") == 2, what: "the origin asked for the rest");
        var backendOf = instance.Server.Topology.Current.AllBackends.Single();
        Assert.Equal(1, backendOf.InFlight);

        // The client gives up (as an S3 client does on a silent read): the exchange for the rest ends with it, not at
        // the backend timeout (5 minutes by default).
        response.Dispose();
        await Eventually.WaitUntilAsync(() => backendOf.InFlight == 0, what: "the backend exchange for the rest to end with its client");
        silent.SetResult();
    }

    [Theory]
    [InlineData("changed")]
    [InlineData("failing")]
    public async Task A_stored_body_that_neither_the_store_nor_the_origin_can_finish_is_cut_and_never_passes_for_whole(string origin)
    {
        await using var setup = await StoredObjectAsync($"cut-{origin}", 2 * 1024 * 1024);
        var (backend, relay, instance, client, path, item) = setup;
        var storedETag = item.ETag;
        if (origin == "changed")
        {
            // A new version at the origin: its bytes must not finish the old one's body (If-Match is refused, 412).
            item.Body = [.. item.Body.Select(b => (byte)~b)];
            item.ETag = "\"new-version\"";
        }
        else
        {
            item.FailWith = 503;
        }

        relay.CutReads(64 * 1024);
        relay.CutEveryRead(0);
        using var response = await client.GetAsync(path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("HIT", Outcome(response));
        Assert.Equal(item.Body.Length, response.Content.Headers.ContentLength);
        var body = new MemoryStream();
        var failure = await Record.ExceptionAsync(async () => await (await response.Content.ReadAsStreamAsync()).CopyToAsync(body));
        Assert.True(failure is not null, $"the body ended without an error after {body.Length} bytes; the store saw: {string.Join(", ", relay.Requests)}; cut {relay.ReadsCut}");
        Assert.True(body.Length < item.Body.Length);
        var stored = origin == "changed" ? item.Body.Select(b => (byte)~b).ToArray() : item.Body;
        Assert.Equal(stored.AsSpan(0, (int)body.Length).ToArray(), body.ToArray()); // what did arrive is the entry's

        Assert.Contains(backend.Log, line => line.Contains($"range=bytes={body.Length}-{item.Body.Length - 1} if-none-match= if-match={storedETag} -> {(origin == "changed" ? 412 : 503)}", StringComparison.Ordinal));
        await Eventually.WaitUntilAsync(() => instance.Server.Cache!.Metrics.StoredReadsCut == 1, what: "the cut counted");
        Assert.True(relay.ReadsCut > StoredResponseWriter.MaxResumesWithoutProgress); // asked again before giving up
    }

    /// <summary>
    /// A request with the client's own validator looks its entry up with a HEAD and reads the body with a GET of its
    /// own (one answered with the entry's body opens it in the lookup's GET, so nothing can come between those two).
    /// </summary>
    [Fact]
    public async Task An_entry_without_a_strong_etag_replaced_between_lookup_and_read_never_goes_out_under_the_headers_looked_up()
    {
        // An origin that sends Last-Modified only: the length is all that tells versions apart.
        await using var setup = await StoredObjectAsync("replaced", 2 * 1024 * 1024 + 9, originSendsNoETag: true, host: "minio.example:9000");
        var (backend, relay, instance, client, path, item) = setup;

        // Between this HIT's lookup and its read, another sidecar stores another version of the same length under
        // the key (its metadata the same as far as ETag and length go).
        var other = new byte[item.Body.Length];
        Array.Fill(other, (byte)0x5A);
        using var store = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        var key = CacheKey.For("minio.example:9000", path);
        relay.BeforeNextEntryRead = async () =>
        {
            using var current = await store.OpenAsync(key, 0, 0, default);
            var metadata = new Dictionary<string, string> { [S3CacheStore.EntryMetadata] = current!.Head.Metadata(S3CacheStore.EntryMetadata)! };
            await store.PutAsync(key, other, metadata, default);
        };

        // The client holds an older copy of its own: the entry answers it unless the validators match.
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.TryAddWithoutValidation("If-None-Match", "\"an-older-copy\"");
        using var response = await client.SendAsync(request);
        Assert.Null(relay.BeforeNextEntryRead); // the store was changed under the read
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        // The origin's own answer, not the other version's bytes under the first version's headers.
        Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(2, backend.Served(path));
    }

    /// <summary>
    /// An origin with one object, a relay in front of the store, a sidekick caching through it, and the object stored
    /// through that sidekick (its MISS read whole, its fill completed).
    /// </summary>
    private async Task<StoredSetup> StoredObjectAsync(string name, int size, TimeProvider? time = null, bool originSendsNoETag = false, string? host = null)
    {
        var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/{name}-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, size);
        if (originSendsNoETag)
        {
            item.ETag = null;
        }

        var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(relay.Url), time);
        var setup = new StoredSetup(backend, relay, instance, client, path, item);
        try
        {
            if (host is not null)
            {
                client.DefaultRequestHeaders.Host = host;
            }

            await StoredAsync(instance, client, path, item.Body);
            return setup;
        }
        catch
        {
            await setup.DisposeAsync();
            throw;
        }
    }

    private sealed record StoredSetup(CacheTestBackend Backend, StoreRelay Relay, SidekickInstance Instance, HttpClient Client, string Path, OriginObject Item)
        : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await Instance.DisposeAsync();
            await Relay.DisposeAsync();
            await Backend.DisposeAsync();
        }
    }

    private static async Task StoredAsync(SidekickInstance instance, HttpClient client, string path, byte[] body)
    {
        using var miss = await client.GetAsync(path);
        Assert.Equal("MISS", Outcome(miss));
        Assert.Equal(body, await miss.Content.ReadAsByteArrayAsync());
        var cache = instance.Server.Cache!;
        await Eventually.WaitUntilAsync(() => cache.Metrics.FillsCompleted == 1 && cache.FillsInFlight == 0, what: "the fill stored");
    }
}
