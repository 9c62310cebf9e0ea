using Sidekick.Caching;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A store outage is never an error for a client (docs/cache.md). A request joined to a fill in flight (served from
/// its spool, X-Cache: HIT) while the store dies must get the whole body, as the filling client does from the origin;
/// the entry is then not stored, and the fill is given up as a store error once the body has ended.
/// </summary>
public sealed class StoreOutageDuringFillTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    [Fact]
    public async Task A_request_reading_a_fill_gets_the_whole_body_when_the_store_dies_before_the_upload()
    {
        var data = Directory.CreateTempSubdirectory("store-outage").FullName;
        var s3 = await S3rverProcess.StartAsync(data, CacheFixture.Bucket); // its own store: this test kills it
        var killed = false;
        try
        {
            await using var backend = await CacheTestBackend.StartAsync();
            const string Path = "/bucket/store-dies.bin";
            var item = backend.Put(Path, 16 * 1024 * 1024);
            backend.ChunkDelayMs = 25; // 256 chunks, at least 6.4 s: the upload (after CacheFill.UploadDelay) meets the dead store mid-body
            var (instance, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(s3.Url));
            await using var running = instance;
            var cache = instance.Server.Cache!;

            using var first = await client.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal("MISS", first.Headers.GetValues("X-Cache").Single());
            var firstBody = first.Content.ReadAsByteArrayAsync();
            await fixture.Eventually(() => cache.FillsInFlight == 1, "the fill to start");

            using var second = await client.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal("HIT", second.Headers.GetValues("X-Cache").Single()); // joined to the fill: read from its spool
            var secondBody = second.Content.ReadAsByteArrayAsync();

            await s3.DisposeAsync(); // the store dies while the body streams
            killed = true;

            Assert.Equal(item.Body, await firstBody); // the filling client: whole, from the origin
            Assert.Equal(item.Body, await secondBody); // the joined request: whole too, from the spool
            await fixture.Eventually(() => cache.Fills.AbandonedFor(FillAbandonReason.StoreError) == 1 && cache.FillsInFlight == 0,
                "the fill given up as a store error once the body ended");
            Assert.Equal(1, backend.Served(Path));
        }
        finally
        {
            if (!killed)
            {
                await s3.DisposeAsync();
            }

            Directory.Delete(data, recursive: true);
        }
    }
}
