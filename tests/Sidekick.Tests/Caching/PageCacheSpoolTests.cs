using Microsoft.Extensions.Time.Testing;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Where the spool's file system refuses O_DIRECT, whole fills write through the page cache on the client's copy
/// loop, and a fill's file is kept and handed to the next fill once its last user lets go. A write must count as a
/// user: one that passed its fill's checks and then stalled would otherwise land in the next fill's bytes.
/// </summary>
public sealed class PageCacheSpoolTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const int Page = SpoolBufferPool.Alignment;

    [Fact]
    public async Task A_write_stalled_while_its_fill_was_given_up_does_not_land_in_the_next_fill_given_its_file()
    {
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = Directory.CreateTempSubdirectory("sidekick-pagecache").FullName;
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow); // never advanced: no upload begins before the body is in
        using var stalled = new ManualResetEventSlim(false);
        using var resume = new ManualResetEventSlim(false);
        CacheFill? first = null;
        var writesOfFirst = 0;
        using var under = new FillsUnderTest(environment, time, writesDirect: false, beforeSpoolWrite: fill =>
        {
            // Holds the first fill's second write after its checks, as a descheduled thread would be held there.
            if (fill == Volatile.Read(ref first) && Interlocked.Increment(ref writesOfFirst) == 2)
            {
                stalled.Set();
                resume.Wait(TimeSpan.FromSeconds(30));
            }
        });
        var fills = under.Fills;

        Volatile.Write(ref first, fills.Start("first", "/first.bin", Entry(time, "\"first\"", 3 * Page), new Dictionary<string, string>()));
        Assert.NotNull(first);
        var firstWriter = first!.Writer(0, 3 * Page);
        Assert.True(firstWriter.Offer(Filled(Page, 0xAA)));
        var stalledWrite = Task.Run(() => firstWriter.Offer(Filled(Page, 0xAA)));
        Assert.True(stalled.Wait(TimeSpan.FromSeconds(30)), "the first fill's second write to stall");

        first.Abandon(FillAbandonReason.ClientGone, "the client left");
        Assert.False(await first.Upload);

        var second = fills.Start("second", "/second.bin", Entry(time, "\"second\"", 3 * Page), new Dictionary<string, string>());
        Assert.NotNull(second);
        var secondWriter = second!.Writer(0, 3 * Page);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(secondWriter.Offer(Filled(Page, 0x55)));
        }

        resume.Set();
        await stalledWrite;

        // The second fill's bytes, as its readers and its upload read them back from its spool file.
        using var reader = second.OpenReader(0, 3 * Page - 1)!;
        var body = new byte[3 * Page];
        await reader.ReadExactlyAsync(body);
        Assert.Equal(-1, Array.FindIndex(body, b => b != 0x55));

        second.Abandon(FillAbandonReason.ClientGone, "test over");
        Assert.False(await second.Upload);
    }

    private static byte[] Filled(int length, byte value)
    {
        var bytes = new byte[length];
        Array.Fill(bytes, value);
        return bytes;
    }

    private static CachedResponse Entry(TimeProvider time, string etag, long length) => new()
    {
        Status = 200, Headers = [new("ETag", etag)], Length = length, ReceivedAt = time.GetUtcNow(), InitialAge = TimeSpan.Zero,
        VaryNames = [], VaryValues = [],
    };
}
