using System.Net;
using System.Security.Cryptography;

namespace Sidekick.Tests.Caching;

/// <summary>
/// RFC 9111 §4.4 across sidecars that share a bucket: a cache that saw an unsafe request succeed must not serve the
/// version it replaced. Deleting the entry does not do it when another sidecar is still uploading that version: the
/// upload lands after the delete.
/// </summary>
public sealed class SharedInvalidationTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const string Path = "/bucket/report.bin";

    [Fact]
    public async Task A_sidecar_that_saw_a_write_succeed_never_serves_the_old_version_another_sidecar_stored_after_it()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var v1 = backend.Put(Path, 6 * 1024 * 1024, "max-age=300"); // a multipart upload (5 MiB parts): the relay can hold it
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var parts = new TaskCompletionSource();
        relay.PartsWaitFor = parts.Task; // sidecar A's store is slow to take the upload

        var (a, clientA) = await fixture.StartSidekickAsync([backend.Url], Integration.SidekickHarness.FastOptions, fixture.Environment(relay.Url));
        await using var runningA = a;
        var (b, clientB) = await fixture.StartSidekickAsync([backend.Url], Integration.SidekickHarness.FastOptions, fixture.Environment());
        await using var runningB = b;
        clientA.DefaultRequestHeaders.Host = clientB.DefaultRequestHeaders.Host = "localhost:8080"; // as every app calls its sidecar

        // A client reads v1 through A: it has the whole body while A's upload of v1 is held.
        using (var read = await clientA.GetAsync(Path))
        {
            Assert.Equal("MISS", Outcome(read));
            Assert.Equal(v1.Body, await read.Content.ReadAsByteArrayAsync());
        }

        Assert.Equal(1, a.Server.Cache!.FillsInFlight);

        // Then writes v2 through B; the origin takes it.
        var v2 = RandomNumberGenerator.GetBytes(6 * 1024 * 1024);
        using (var put = await clientB.PutAsync(Path, new ByteArrayContent(v2)))
        {
            Assert.True(put.IsSuccessStatusCode, $"PUT answered {put.StatusCode}");
        }

        // A's upload of v1 goes on and lands after B's invalidation.
        parts.SetResult();
        await fixture.Eventually(() => a.Server.Cache!.FillsInFlight == 0 && a.Server.Cache.Metrics.FillsCompleted >= 1, "A's fill of v1");

        using var after = await clientB.GetAsync(Path);
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
        Assert.NotEqual("HIT", Outcome(after));
        Assert.Equal(v2, await after.Content.ReadAsByteArrayAsync());
    }

    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";
}
