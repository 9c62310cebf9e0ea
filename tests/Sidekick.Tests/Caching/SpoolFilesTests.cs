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
    public void Files_left_by_a_stopped_sidekick_are_removed_and_a_live_sidekicks_files_stay()
    {
        // A live sidecar sharing the directory, in the middle of a fill and holding a kept file.
        using var live = new SpoolFiles(_directory, 1 << 20, _time);
        var filling = live.Take(8192)!;
        RandomAccess.Write(filling, Enumerable.Repeat((byte)7, 8192).ToArray(), 0);
        var kept = live.Take(4096)!;
        live.Return(kept);
        // What a killed one left: files nobody holds. And a file that is not a spool file.
        File.WriteAllBytes(Path.Combine(_directory, "fill-0123456789abcdef0123456789abcdef.spool"), new byte[5000]);
        File.WriteAllBytes(Path.Combine(_directory, "fill-fedcba9876543210fedcba9876543210.spool"), new byte[7000]);
        File.WriteAllBytes(Path.Combine(_directory, "notes.txt"), new byte[10]);
        Assert.Equal(5, Directory.GetFiles(_directory).Length);

        using var starting = new SpoolFiles(_directory, 1 << 20, _time);
        Assert.Equal((2, 12_000L), starting.RemoveLeftovers());

        Assert.Equal(3, Directory.GetFiles(_directory).Length);
        Assert.True(File.Exists(Path.Combine(_directory, "notes.txt")));
        var read = new byte[8192];
        Assert.Equal(8192, RandomAccess.Read(filling, read, 0));
        Assert.All(read, b => Assert.Equal(7, b));
        Assert.Equal((0, 0L), starting.RemoveLeftovers());
        live.Return(filling);
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void Spool_files_and_the_directory_made_for_them_are_this_users_alone()
    {
        // Spools hold response bodies, credentialed ones too, and the default directory is under the shared /tmp.
        var directory = Path.Combine(_directory, "made-here");
        using var spool = new SpoolFiles(directory, 1 << 20, _time);
        var file = spool.Take(4096)!;

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(directory));
        spool.Return(file);
    }

    [Fact]
    public void No_spool_directory_yet_is_nothing_to_remove()
    {
        using var spool = new SpoolFiles(Path.Combine(_directory, "not-made-yet"), 1 << 20, _time);
        Assert.Equal((0, 0L), spool.RemoveLeftovers());
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

    [Fact]
    public async Task Two_fills_that_each_fit_the_free_space_but_not_together_get_one_file_and_one_spool_full()
    {
        // Each fill's check saw the free space without the other's file still being made: both passed, and the second
        // fallocate took the rest of the disk before it failed (ext4 allocates all it can first), so every other
        // writer on the host met a full disk. A file system with 10 MiB free, as the spool is told, and two fills of
        // 6 MiB: the real disk is never asked for more than one of them.
        const long Free = 10 << 20;
        const long Length = 6 << 20;
        var created = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var watcher = new FileSystemWatcher(_directory) { EnableRaisingEvents = true };
        watcher.Created += (_, e) => created.Enqueue(e.Name ?? "");
        using var spool = new SpoolFiles(_directory, long.MaxValue / 4, _time) { FreeSpaceForTests = () => Free };
        Microsoft.Win32.SafeHandles.SafeFileHandle? secondFile = null;
        Exception? secondRefused = null;
        var filesMeanwhile = -1;
        spool.BeforeCreateForTests = () =>
        {
            spool.BeforeCreateForTests = null; // the first fill's creation only
            // The second fill, on another thread, while the first has passed its check and not made its file yet.
            var second = Task.Run(() => Record.Exception(() => secondFile = spool.Take(Length)));
            Assert.True(second.Wait(TimeSpan.FromSeconds(30)), "the second fill's take did not return while the first made its file");
            secondRefused = second.Result;
            filesMeanwhile = Directory.GetFiles(_directory).Length;
        };

        var first = spool.Take(Length);

        Assert.NotNull(first);
        Assert.Null(secondFile);
        var refused = Assert.IsType<SpoolDiskFullException>(secondRefused); // spool_full (CacheFills)
        Assert.Contains($"has {Free} bytes free on its file system ({Length} of them being allocated to other fills' spool files), the body needs {Length}",
            refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, filesMeanwhile);
        Assert.Equal(Length, spool.Reserved); // the refused fill's reservation given back
        // The first fill's file is the marker: the watcher reports in order, so a file the second made (and deleted when
        // its fallocate failed) would come first.
        await Eventually.WaitUntilAsync(() => !created.IsEmpty, what: "the first fill's spool file seen by the watcher");
        Assert.Single(created);
        Assert.Single(Directory.GetFiles(_directory));
        spool.Return(first);
        secondFile?.Dispose();
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);
}
