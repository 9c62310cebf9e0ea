using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Ranges are cheap to send and each query string is its own entry: a client's 1-byte ranges of a large object must
/// not reserve the object's length of spool each, nor hold every fill slot, keeping every other client's fills out.
/// A combination of ranges reserves only the bytes its ranges brought, and only a quarter of SIDEKICK_CACHE_MAX_FILLS
/// combine at once.
/// </summary>
public sealed class RangeSpoolHoldTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const int Block = SpoolBufferPool.Alignment; // what a range reserves at least: the file system's block
    private static CachedResponse Entry(TimeProvider time, string etag, long length) => new()
    {
        Status = 200, Headers = [new("ETag", etag)], Length = length, ReceivedAt = time.GetUtcNow(), InitialAge = TimeSpan.Zero,
        VaryNames = [], VaryValues = [],
    };

    [Fact]
    public async Task One_byte_ranges_of_a_large_object_under_many_query_strings_leave_the_spool_to_other_clients()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        backend.Put("/bucket/large.bin", 4 * 1024 * 1024);
        var other = backend.Put("/bucket/other.bin", 3 * 1024 * 1024);
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_SIZE"] = "8MiB"; // two of the object's lengths
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = Directory.CreateTempSubdirectory("sidekick-hold").FullName;
        var (instance, client) = await fixture.StartSidekickAsync(backend, environment);
        await using var running = instance;

        const int Ranges = 20;
        const int Combining = 64 / 4; // a quarter of the default SIDEKICK_CACHE_MAX_FILLS
        for (var i = 0; i < Ranges; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"/bucket/large.bin?hold={i}");
            request.Headers.Range = new RangeHeaderValue(i, i);
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
            Assert.Single(await response.Content.ReadAsByteArrayAsync());
        }

        // Each combination holds the block of the byte it got, not the object's 4 MiB; at most a quarter of the 64 fill
        // slots combine.
        var cache = instance.Server.Cache!;
        var state = await StateAsync(client);
        Assert.InRange(state.GetProperty("spoolBytes").GetInt64(), 0, Combining * Block);
        Assert.InRange(state.GetProperty("fillsInFlight").GetInt32(), 0, Combining);
        Assert.Equal(0, state.GetProperty("fillsAbandoned").GetProperty("spool_full").GetInt64());
        Assert.Equal(Ranges - Combining, cache.Metrics.NotStoredOf(NotStoredReason.FillsBusy));

        // Another client's whole GET is still filled and stored.
        using (var miss = await client.GetAsync("/bucket/other.bin"))
        {
            Assert.Equal("MISS", miss.Headers.GetValues("X-Cache").Single());
            Assert.Equal(other.Body, await miss.Content.ReadAsByteArrayAsync());
        }

        await fixture.Eventually(() => cache.Metrics.FillsCompleted == 1, "the other object to be stored", cache);
        using var hit = await client.GetAsync("/bucket/other.bin");
        Assert.Equal("HIT", hit.Headers.GetValues("X-Cache").Single());
        Assert.Equal(other.Body, await hit.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served("/bucket/other.bin"));
    }

    [Fact]
    public async Task Combinations_take_at_most_a_quarter_of_the_fill_slots_and_reserve_only_their_bytes()
    {
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_MAX_FILLS"] = "8";
        environment["SIDEKICK_CACHE_SPOOL_SIZE"] = "16MiB";
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = Directory.CreateTempSubdirectory("sidekick-hold").FullName;
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var under = new FillsUnderTest(environment, time);
        var fills = under.Fills;

        var combining = new List<CacheFill>();
        for (var i = 0; i < 8; i++)
        {
            var (fill, _) = fills.StartPiece($"hold-{i}", $"/big.bin?hold={i}", Entry(time, "\"big\"", 12 * 1024 * 1024), new Dictionary<string, string>());
            if (fill is not null)
            {
                Assert.True(fill.Writer(i, i + 1).Offer(new byte[1]));
                combining.Add(fill);
            }
        }

        Assert.Equal(2, combining.Count);
        Assert.Equal(6, under.Metrics.NotStoredOf(NotStoredReason.FillsBusy));
        Assert.Equal(2 * Block, fills.SpoolUsed); // the blocks of the bytes the ranges brought, not 2 x 12 MiB

        // Whole fills still find slots and the budget.
        var whole = fills.Start("whole", "/whole.bin", Entry(time, "\"whole\"", 8 * 1024 * 1024), new Dictionary<string, string>());
        Assert.NotNull(whole);
        Assert.Equal(3, fills.InFlight);
        Assert.Equal(8 * 1024 * 1024 + 2 * Block, fills.SpoolUsed);

        whole!.Abandon(FillAbandonReason.ClientGone, "test over");
        combining.ForEach(f => f.Abandon(FillAbandonReason.ClientGone, "test over"));
        Assert.False(await whole.Upload);
        foreach (var fill in combining)
        {
            Assert.False(await fill.Upload);
        }

        Assert.Equal(0, fills.InFlight);
        // The whole fill's spool is let go on the spool writer's thread once its last queued write is skipped.
        await fixture.Eventually(() => fills.SpoolUsed == 0, "every spool byte given back");
    }

    [Fact]
    public async Task A_combination_reserves_its_ranges_as_they_come_and_is_given_up_when_they_outgrow_the_spool()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var under = OverOneMiB(time, out var spool);
        var fills = under.Fills;

        // An object ten times the budget: its ranges are combined for as long as they fit.
        var (fill, created) = fills.StartPiece("large", "/bucket/large.bin", Entry(time, "\"v1\"", 10_000_000), new Dictionary<string, string>());
        Assert.True(created);
        Assert.True(fill!.Writer(0, 600_000).Offer(new byte[600_000]));
        Assert.Equal(602_112, fills.SpoolUsed); // its whole blocks
        Assert.True(fill.Writer(100_000, 200_000).Offer(new byte[100_000])); // bytes it holds already reserve nothing more
        Assert.Equal(602_112, fills.SpoolUsed);
        Assert.Equal(600_000, new FileInfo(Directory.GetFiles(spool).Single()).Length); // sparse: nothing allocated ahead of the ranges

        Assert.False(fill.Writer(5_000_000, 5_600_000).Offer(new byte[600_000])); // 1.2 MB of ranges: over the budget
        Assert.True(fill.Abandoned);
        Assert.False(await fill.Upload);
        Assert.Equal(["/bucket/large.bin spool_full: the ranges' 1208320 bytes do not fit the spool budget (602112 of 1048576 in use)"], under.Abandonments);
        Assert.Equal(1, fills.AbandonedFor(FillAbandonReason.SpoolFull));
        Assert.Equal(0, fills.InFlight);
        Assert.Equal(0, fills.SpoolUsed);
        Assert.Empty(Directory.GetFiles(spool)); // a combination's sparse file is not kept
    }

    [Fact]
    public async Task One_byte_ranges_far_apart_reserve_the_blocks_they_take_on_disk()
    {
        // A sparse file takes a whole block for a byte: counted in bytes, 4,000 one-byte ranges 64 KiB apart reserved
        // 4,000 bytes of a 1 MiB budget and took 16 MB of disk, and the budget no longer bounded the spool.
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var under = OverOneMiB(time, out var spool);
        var (fill, _) = under.Fills.StartPiece("apart", "/bucket/apart.bin", Entry(time, "\"v1\"", 4L * 1024 * 1024 * 1024), new Dictionary<string, string>());

        const int Fit = 1024 * 1024 / Block;
        for (var i = 0; i < Fit; i++)
        {
            Assert.True(fill!.Writer(i * 65_536L, (i * 65_536L) + 1).Offer(new byte[1]), $"range {i}");
        }

        Assert.Equal(Fit * Block, under.Fills.SpoolUsed);
        Assert.InRange(AllocatedBytes(Directory.GetFiles(spool).Single()), 0, under.Fills.SpoolCapacity);
        Assert.False(fill!.Writer(Fit * 65_536L, (Fit * 65_536L) + 1).Offer(new byte[1])); // one block more than the budget
        Assert.False(await fill.Upload);
        Assert.Equal(1, under.Fills.AbandonedFor(FillAbandonReason.SpoolFull));
    }

    /// <summary>Fills with a 1 MiB spool budget in a directory of their own, on <paramref name="time"/>.</summary>
    private FillsUnderTest OverOneMiB(FakeTimeProvider time, out string spool)
    {
        spool = Directory.CreateTempSubdirectory("sidekick-hold").FullName;
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_SIZE"] = "1MiB";
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = spool;
        return new FillsUnderTest(environment, time);
    }

    /// <summary>What a file takes on disk (stat's blocks), not its length.</summary>
    private static long AllocatedBytes(string path)
    {
        using var stat = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%b %B", path]) { RedirectStandardOutput = true })!;
        var fields = stat.StandardOutput.ReadToEnd().Trim().Split(' ');
        stat.WaitForExit();
        return long.Parse(fields[0], System.Globalization.CultureInfo.InvariantCulture) * long.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task<JsonElement> StateAsync(HttpClient client)
    {
        using var document = JsonDocument.Parse(await client.GetStringAsync("/v1/state"));
        return document.RootElement.GetProperty("cache").Clone();
    }
}
