using System.Net;
using System.Net.Http.Headers;

namespace Sidekick.Tests.Caching;

/// <summary>
/// RFC 9111 §3.5 as a security rule: an entry filled from a request with credentials (Authorization or a
/// presigned query) is served to a later request, anonymous ones included, only after that request's own
/// conditional request comes back 304. The origin here refuses anonymous requests with 403, so every case
/// below must end in the origin's 403 (or a 504 / 500), never the stored bytes.
/// </summary>
public sealed class CredentialedEntryTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const string Path = "/private-bucket/object.bin";

    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    private static void Alice(HttpRequestMessage request) => request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "alice");

    public static TheoryData<string, string?> AnonymousRequests => new()
    {
        // name, Cache-Control of the stored response (null: none, MinIO's default, so heuristic freshness)
        { "plain GET", null },
        { "plain GET", "max-age=600" },
        { "plain GET", "public, max-age=600" },
        { "plain GET", "s-maxage=600" },
        { "Range", null },
        { "HEAD", null },
        { "If-None-Match", null },
        { "If-Modified-Since", null },
        { "max-stale", "max-age=0" },
        { "stale-while-revalidate", "max-age=0, stale-while-revalidate=3600" },
    };

    [Theory]
    [MemberData(nameof(AnonymousRequests))]
    public async Task An_anonymous_request_never_gets_an_entry_filled_with_credentials(string kind, string? cacheControl)
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put(Path, 64 * 1024, cacheControl);
        item.AllowedUser = "alice";
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await FillAsync(instance, client, Alice);

        using var request = new HttpRequestMessage(kind == "HEAD" ? HttpMethod.Head : HttpMethod.Get, Path);
        switch (kind)
        {
            case "Range":
                request.Headers.Range = new RangeHeaderValue(0, 1023);
                break;
            case "If-None-Match":
                request.Headers.TryAddWithoutValidation("If-None-Match", item.ETag);
                break;
            case "If-Modified-Since":
                request.Headers.TryAddWithoutValidation("If-Modified-Since", DateTimeOffset.UtcNow.ToString("r"));
                break;
            case "max-stale":
                request.Headers.TryAddWithoutValidation("Cache-Control", "max-stale=86400");
                break;
        }

        var deniedBefore = backend.Denied.Count;
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsByteArrayAsync();
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.NotEqual("HIT", Outcome(response));
        Assert.NotEqual("REVALIDATED", Outcome(response));
        AssertNoObjectBytes(item.Body, body);
        // The origin was asked, and refused this requester.
        Assert.True(backend.Denied.Count > deniedBefore, $"the origin was not asked; X-Cache {Outcome(response)}");
        Assert.Equal(1, backend.Served(Path));
    }

    [Fact]
    public async Task Only_if_cached_on_an_entry_filled_with_credentials_is_a_504()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put(Path, 64 * 1024, "max-age=600");
        item.AllowedUser = "alice";
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await FillAsync(instance, client, Alice);

        foreach (var credentials in new Action<HttpRequestMessage>[] { _ => { }, Alice })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, Path);
            request.Headers.TryAddWithoutValidation("Cache-Control", "only-if-cached");
            credentials(request);
            using var response = await client.SendAsync(request);
            var body = await response.Content.ReadAsByteArrayAsync();
            Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
            AssertNoObjectBytes(item.Body, body);
        }
    }

    [Fact]
    public async Task Stale_if_error_never_serves_an_entry_filled_with_credentials()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put(Path, 64 * 1024, "max-age=0, stale-if-error=86400");
        item.AllowedUser = "alice";
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await FillAsync(instance, client, Alice);

        item.FailWith = 500;
        using var anonymous = await client.GetAsync(Path);
        var body = await anonymous.Content.ReadAsByteArrayAsync();
        Assert.Equal(HttpStatusCode.InternalServerError, anonymous.StatusCode);
        AssertNoObjectBytes(item.Body, body);

        // With the origin gone altogether: still nothing from the store.
        await backend.DisposeAsync();
        using var unreachable = await client.GetAsync(Path);
        body = await unreachable.Content.ReadAsByteArrayAsync();
        Assert.True(unreachable.StatusCode is HttpStatusCode.BadGateway or HttpStatusCode.GatewayTimeout, $"got {unreachable.StatusCode}");
        AssertNoObjectBytes(item.Body, body);
    }

    [Fact]
    public async Task A_presigned_fill_is_not_served_to_the_same_url_without_its_signature()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put(Path, 64 * 1024, "max-age=600");
        item.AllowedUser = "alice";
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        const string presigned = Path + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20260101&X-Amz-Signature=alice";
        await FillAsync(instance, client, _ => { }, presigned);

        using var bare = await client.GetAsync(Path);
        var body = await bare.Content.ReadAsByteArrayAsync();
        Assert.Equal(HttpStatusCode.Forbidden, bare.StatusCode);
        AssertNoObjectBytes(item.Body, body);

        // Another signature for the same object: the origin accepts it (304), so the cache serves it.
        using var again = await client.GetAsync(presigned.Replace("AKIA%2F20260101", "AKIA%2F20260102", StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal("REVALIDATED", Outcome(again));
        Assert.Equal(item.Body, await again.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served(Path));
    }

    [Fact]
    public async Task The_owner_is_still_served_from_the_cache_after_a_304()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put(Path, 64 * 1024, null);
        item.AllowedUser = "alice";
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await FillAsync(instance, client, Alice);

        using var request = new HttpRequestMessage(HttpMethod.Get, Path);
        Alice(request);
        request.Headers.Range = new RangeHeaderValue(100, 199);
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
        Assert.Equal("REVALIDATED", Outcome(response));
        Assert.Equal(item.Body.AsSpan(100, 100).ToArray(), await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served(Path));
    }

    [Fact]
    public async Task A_signed_range_is_revalidated_without_changing_what_was_signed()
    {
        // S3 clients read large objects with parallel signed Range GETs: the conditional request that confirms the
        // entry must carry the client's Range as signed, and the range is then served from the cache.
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put(Path, 64 * 1024, null);
        item.AllowedUser = "alice";
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await FillAsync(instance, client, Alice);

        using var request = new HttpRequestMessage(HttpMethod.Get, Path);
        Alice(request);
        request.Headers.TryAddWithoutValidation("Range", "bytes=1000-1999");
        request.Headers.TryAddWithoutValidation("X-Test-Signed-Range", "bytes=1000-1999");
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
        Assert.Equal("REVALIDATED", Outcome(response));
        Assert.Equal(item.Body.AsSpan(1000, 1000).ToArray(), await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served(Path));
    }

    /// <summary>One credentialed GET that fills the entry, then waits until the store has it.</summary>
    [Fact]
    public async Task An_authorised_readers_304_does_not_reopen_an_object_made_private_to_anonymous_clients()
    {
        // Read anonymously while public, then made private by its owner (an ACL or policy change: same bytes, same
        // ETag). An authorised reader's 304 refreshes the entry; the entry now stands on that reader's credentials, so an
        // anonymous client is still asked about, and refused by the origin, rather than served the fresh entry.
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put(Path, 64 * 1024, "max-age=0");
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;
        await FillAsync(instance, client, _ => { });

        item.AllowedUser = "alice";
        item.CacheControl = "max-age=600";
        using (var request = new HttpRequestMessage(HttpMethod.Get, Path))
        {
            Alice(request);
            using var alice = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, alice.StatusCode);
            Assert.Equal("REVALIDATED", Outcome(alice));
            Assert.Equal(item.Body, await alice.Content.ReadAsByteArrayAsync());
        }

        var deniedBefore = backend.Denied.Count;
        using var anonymous = await client.GetAsync(Path);
        var body = await anonymous.Content.ReadAsByteArrayAsync();
        Assert.Equal(HttpStatusCode.Forbidden, anonymous.StatusCode);
        AssertNoObjectBytes(item.Body, body);
        Assert.True(backend.Denied.Count > deniedBefore, $"the origin was not asked; X-Cache {Outcome(anonymous)}");
    }

    private static async Task FillAsync(Sidekick.Hosting.SidekickInstance instance, HttpClient client, Action<HttpRequestMessage> credentials, string target = Path)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, target);
        credentials(request);
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("MISS", Outcome(response));
        await response.Content.ReadAsByteArrayAsync();
        var deadline = Environment.TickCount64 + 15000;
        while (instance.Server.Cache!.Metrics.FillsCompleted < 1)
        {
            Assert.True(Environment.TickCount64 < deadline, "the credentialed fill did not complete within 15 s");
            await Task.Delay(25);
        }
    }

    private static void AssertNoObjectBytes(byte[] stored, byte[] body)
    {
        // Any 64-byte run of the object in the answer is a leak.
        var probes = stored.Chunk(64).Take(16).ToArray();
        foreach (var probe in probes)
        {
            Assert.True(body.AsSpan().IndexOf(probe) < 0, $"the answer ({body.Length} bytes) holds bytes of the stored object");
        }
    }
}
