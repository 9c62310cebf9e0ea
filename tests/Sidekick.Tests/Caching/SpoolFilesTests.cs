using Microsoft.Extensions.Time.Testing;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Spool files are reused by the next fill for a moment after their fill is done (overwriting cached pages is far
/// cheaper than allocating new ones), within the spool budget, and deleted once no fill came for a while.
/// </summary>
public sealed class SpoolFilesTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("sidekick-spool-files").FullName;
    private readonly FakeTimeProvider _time = new(DateTimeOffset.UtcNow);

    [Fact]
    public void A_finished_fills_file_is_overwritten_by_the_next_fill_and_deleted_after_the_linger()
    {
        using var spool = new SpoolFiles(_directory, 1 << 20, _time);
        var first = spool.Take(4096)!;
        RandomAccess.Write(first, new byte[4096], 0);
        spool.Return(first);
        Assert.Equal(0, spool.Reserved);
        Assert.Equal(4096, spool.Kept);
        Assert.Single(Directory.GetFiles(_directory));

        var second = spool.Take(1000)!;
        Assert.Same(first, second);
        Assert.Equal(4096, RandomAccess.GetLength(second)); // taken whole: its pages stay for the next larger fill
        Assert.Equal(4096, spool.Reserved); // and the budget counts all of it
        Assert.Equal(0, spool.Kept);
        spool.Return(second);

        _time.Advance(SpoolFiles.Linger - TimeSpan.FromSeconds(1));
        Assert.Single(Directory.GetFiles(_directory));
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Empty(Directory.GetFiles(_directory));
        Assert.Equal(0, spool.Kept);
    }

    [Fact]
    public void Kept_files_count_against_the_budget_and_give_way_to_a_fill_that_needs_the_room()
    {
        using var spool = new SpoolFiles(_directory, 10_000, _time);
        var a = spool.Take(6000)!;
        var b = spool.Take(4000)!;
        Assert.Null(spool.Take(1)); // the budget is full
        RandomAccess.Write(a, new byte[6000], 0);
        RandomAccess.Write(b, new byte[4000], 0);
        spool.Return(a);
        spool.Return(b);
        Assert.Equal(10_000, spool.Kept);

        // 7000 bytes: the 6000-byte file is too small and grows, the other kept one is deleted to make room.
        var c = spool.Take(7000)!;
        Assert.Same(a, c);
        Assert.Equal(7000, spool.Reserved);
        Assert.Equal(0, spool.Kept);
        Assert.Single(Directory.GetFiles(_directory));
        Assert.Null(spool.Take(3001));
        spool.Return(c);
    }

    [Fact]
    public void A_fill_larger_than_the_budget_gets_no_file_and_keeps_nothing_reserved()
    {
        using var spool = new SpoolFiles(_directory, 10_000, _time);
        Assert.Null(spool.Take(10_001));
        Assert.Equal(0, spool.Reserved);
        Assert.Empty(Directory.GetFiles(_directory));
    }

    [Fact]
    public void A_body_larger_than_the_disks_free_space_is_refused_before_it_starts_whatever_the_budget()
    {
        using var spool = new SpoolFiles(_directory, long.MaxValue / 4, _time);
        Directory.CreateDirectory(_directory);
        var free = spool.FreeSpace();
        Assert.NotNull(free);

        // The whole length is allocated when the file is made: a file system without the room says so at once,
        // rather than the body's writes failing halfway through.
        var length = free.Value + (1L << 40);
        var refused = Assert.Throws<SpoolDiskFullException>(() => spool.Take(length));
        Assert.Contains(_directory, refused.Message, StringComparison.Ordinal);
        Assert.Contains(length.ToString(System.Globalization.CultureInfo.InvariantCulture), refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, spool.Reserved);
        Assert.Empty(Directory.GetFiles(_directory));

        // A body that fits gets its file (its blocks allocated, its length still what was written: none yet).
        var file = spool.Take(3 << 20);
        Assert.NotNull(file);
        Assert.Equal(3 << 20, spool.Reserved);
        spool.Return(file);
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);
}
