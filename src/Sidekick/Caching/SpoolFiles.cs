using Microsoft.Win32.SafeHandles;

namespace Sidekick.Caching;

/// <summary>
/// The spool files of the fills and the local disk they may use together (SIDEKICK_CACHE_SPOOL_SIZE). A fill reserves
/// its whole announced length when it takes a file (a larger kept file it reuses: that file's whole size). A file whose fill is done is kept for <see cref="Linger"/> and
/// handed to the next fill, which overwrites it in place: writing into pages the file already has in the page
/// cache costs a tenth of allocating new ones (1 GiB written in 0.19 s against 1.9 s into a new file on the bench
/// machine, where that allocation was half of what a miss cost beyond proxying). Kept files count against the
/// budget and are deleted first when a fill needs the room, and all of them once no fill came for
/// <see cref="Linger"/>, so an idle sidecar holds no spool. A fill only ever reads bytes it wrote itself, so what an
/// earlier fill left in a file is never served. A fill combined from ranges takes a new sparse file with nothing
/// reserved (<see cref="TakeGrowing"/>) and reserves the bytes its ranges cover as they are written
/// (<see cref="Grow"/>): a client's ranges never hold more of the budget than the origin sent for them. Such a file is
/// not kept (its size is the object's length, its disk only what was written).
/// </summary>
internal sealed class SpoolFiles : IDisposable
{
    private readonly string _directory;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly List<KeptFile> _kept = [];
    // What each file in use reserved: its fill's length, or a larger kept file's whole size.
    private readonly Dictionary<SafeFileHandle, long> _reservations = [];
    // Files of fills combined from ranges: reserved as they are written, deleted (not kept) when done.
    private readonly HashSet<SafeFileHandle> _growing = [];
    private readonly ITimer _sweeper;
    private long _reserved;
    private long _keptBytes;
    // The free-space check and the count of files being made (allocated, outside the lock) it takes into account.
    private readonly Lock _creations = new();
    private long _creating;

    /// <summary>
    /// At start: the spool directory is made (0700, as <see cref="Create"/> makes it) and a file created and removed in
    /// it, so that a directory that can never hold a spool is one usage error naming it, not a failure per fill.
    /// </summary>
    public static void RequireWritable(string directory)
    {
        try
        {
            MakeDirectory(directory);

            using var probe = File.OpenHandle(Path.Combine(directory, $"probe-{Guid.NewGuid():N}.spool"), FileMode.CreateNew, FileAccess.ReadWrite,
                FileShare.None, FileOptions.DeleteOnClose);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new Cli.UsageException($"the cache spool directory '{directory}' (SIDEKICK_CACHE_SPOOL_DIR) cannot be created or written: {ex.Message}");
        }
    }

    public SpoolFiles(string directory, long capacity, TimeProvider time)
    {
        _directory = directory;
        _time = time;
        Capacity = capacity;
        _sweeper = time.CreateTimer(_ => Sweep(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>How long a file nobody uses is kept for the next fill.</summary>
    public static TimeSpan Linger { get; } = TimeSpan.FromSeconds(30);

    public long Capacity { get; }

    /// <summary>Bytes reserved by the fills in flight.</summary>
    public long Reserved => Volatile.Read(ref _reserved);

    /// <summary>Disk held by files kept for reuse.</summary>
    public long Kept => Volatile.Read(ref _keptBytes);

    /// <summary>Tests only: the spool file system's free space, instead of the real one's.</summary>
    internal Func<long?>? FreeSpaceForTests { get; init; }

    /// <summary>Tests only: run by <see cref="Take"/> once its free-space check passed, before it makes the new file.</summary>
    internal Action? BeforeCreateForTests { get; set; }

    /// <summary>
    /// A new spool file, readable by this user alone (0600, in a directory made 0700): a spool holds response bodies,
    /// credentialed ones among them, and the default directory is in the shared temp directory. A directory the
    /// operator made keeps its own mode.
    /// </summary>
    private SafeFileHandle Create(long length, bool preallocate = true)
    {
        MakeDirectory(_directory);

        var created = File.OpenHandle(Path.Combine(_directory, $"fill-{Guid.NewGuid():N}.spool"), FileMode.CreateNew, FileAccess.ReadWrite,
            FileShare.None, FileOptions.DeleteOnClose | FileOptions.Asynchronous, preallocationSize: preallocate ? length : 0);
        if (!OperatingSystem.IsWindows())
        {
            // Before a byte is written; File.OpenHandle has no mode of its own, the umask's would be 0644.
            File.SetUnixFileMode(created, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        return created;
    }

    /// <summary>
    /// A file for a fill of <paramref name="length"/> bytes with that length reserved, or null when the budget cannot
    /// hold it (even without the kept files). A new file is allocated its whole length on disk at once (fallocate):
    /// a file system with less room than the budget says refuses the fill before it starts, with
    /// <see cref="SpoolDiskFullException"/>, instead of failing its writes halfway through the body. Throws
    /// IOException or UnauthorizedAccessException when no file can be created; the reservation is then given back.
    /// </summary>
    public SafeFileHandle? Take(long length)
    {
        KeptFile? reuse;
        var evicted = new List<KeptFile>();
        long reserved;
        lock (_lock)
        {
            // The smallest kept file that holds the whole body, else the largest (it grows): the fewest new pages.
            reuse = _kept.Where(k => k.Size >= length).MinBy(k => k.Size) ?? _kept.MaxBy(k => k.Size);
            if (reuse is not null)
            {
                _kept.Remove(reuse);
                _keptBytes -= reuse.Size;
            }

            // A larger file is taken whole, its pages kept for the next large fill: the budget counted it already.
            reserved = Math.Max(length, reuse?.Size ?? 0);
            EvictKeptLocked(reserved, evicted);

            if (_reserved + _keptBytes + reserved > Capacity)
            {
                if (reuse is not null)
                {
                    evicted.Add(reuse);
                }

                reuse = null;
                reserved = -1;
            }
            else
            {
                _reserved += reserved;
            }
        }

        evicted.ForEach(k => k.Handle.Dispose());
        if (reserved < 0)
        {
            return null;
        }

        if (reuse is not null)
        {
            lock (_lock)
            {
                _reservations[reuse.Handle] = reserved;
            }

            return reuse.Handle;
        }

        // Asked first: fallocate of more than the file system has takes all of it before it fails (ext4 keeps what it
        // allocated until the file goes), so every other writer on the host would meet a full disk meanwhile. The
        // files other fills are making count as taken: the free space does not show them until their fallocate is
        // done, and two fills of 60 % of it each both passed the check, the second fallocate then filling the disk.
        // Check and count are one step; the fallocate itself runs outside the lock, so a fill's start never waits
        // for another's. While one runs, the part of it already allocated is counted twice: a fill that would just
        // have fit may then be refused, on a disk with little more room than the two bodies. (Counted per spool
        // directory, which is one SpoolFiles in a process; another process's fills on the same disk are not seen.)
        lock (_creations)
        {
            if (FreeSpace() is { } free && free - _creating < length)
            {
                Release(reserved);
                throw DiskFull(free, length, inner: null, _creating);
            }

            _creating += length;
        }

        SafeFileHandle created;
        try
        {
            BeforeCreateForTests?.Invoke();
            created = Create(length);
        }
        catch (IOException ex) when (FreeSpace() is { } freeNow && freeNow < length)
        {
            Release(reserved);
            throw DiskFull(freeNow, length, ex);
        }
        catch
        {
            Release(reserved);
            throw;
        }
        finally
        {
            lock (_creations)
            {
                _creating -= length; // allocated, or failed: the free space tells from now on
            }
        }

        lock (_lock)
        {
            _reservations[created] = reserved;
        }

        return created;
    }

    private SpoolDiskFullException DiskFull(long free, long length, IOException? inner, long creating = 0) => new(
        $"the spool directory {_directory} has {free} bytes free on its file system" +
        (creating > 0 ? $" ({creating} of them being allocated to other fills' spool files)" : "") +
        $", the body needs {length} (SIDEKICK_CACHE_SPOOL_SIZE is {Capacity})", inner);

    /// <summary>Kept files, oldest first, until <paramref name="bytes"/> more fit the budget or none is left (under the lock).</summary>
    private void EvictKeptLocked(long bytes, List<KeptFile> evicted)
    {
        while (_reserved + _keptBytes + bytes > Capacity && _kept.Count > 0)
        {
            var oldest = _kept[0];
            _kept.RemoveAt(0);
            _keptBytes -= oldest.Size;
            evicted.Add(oldest);
        }
    }

    /// <summary>The spool directory, made readable by sidekick's user alone (0700) where the system has modes.</summary>
    private static void MakeDirectory(string directory)
    {
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(directory);
        }
        else
        {
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    /// <summary>
    /// A new sparse file with nothing reserved, for a fill combined from ranges: it reserves its bytes as they are
    /// written (<see cref="Grow"/>), not the object's length up front, and nothing is allocated on disk ahead of them.
    /// Throws IOException or UnauthorizedAccessException when no file can be created.
    /// </summary>
    public SafeFileHandle TakeGrowing()
    {
        var created = Create(0, preallocate: false);
        lock (_lock)
        {
            _reservations[created] = 0;
            _growing.Add(created);
        }

        return created;
    }

    /// <summary>
    /// Reserves <paramref name="bytes"/> more for <paramref name="file"/> (one taken by <see cref="TakeGrowing"/>),
    /// deleting kept files when the budget needs their room; false when the budget cannot hold them, or the file was
    /// returned already.
    /// </summary>
    public bool Grow(SafeFileHandle file, long bytes)
    {
        var evicted = new List<KeptFile>();
        bool grown;
        lock (_lock)
        {
            grown = _reservations.TryGetValue(file, out var reserved);
            if (grown)
            {
                EvictKeptLocked(bytes, evicted);
            }

            grown = grown && _reserved + _keptBytes + bytes <= Capacity;
            if (grown)
            {
                _reserved += bytes;
                _reservations[file] = reserved + bytes;
            }
        }

        evicted.ForEach(k => k.Handle.Dispose());
        return grown;
    }

    /// <summary>
    /// Deletes the spool files a sidekick left here when it stopped without closing them (killed, crashed, out of
    /// memory): a fill's file is deleted when its handle closes, so one left by a process that never closed it would
    /// hold the disk until someone noticed. Sidecars on one host may share the directory: a live one holds each of its
    /// files open with FileShare.None, which is an exclusive flock on Unix, so a file this cannot lock is in use and
    /// stays. Returns how many files went and their bytes.
    /// </summary>
    public (int Files, long Bytes) RemoveLeftovers()
    {
        if (FileLockingDisabled())
        {
            return default; // no lock tells a live sidecar's file from a left one
        }

        string[] names;
        try
        {
            names = Directory.GetFiles(_directory, "fill-*.spool");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return default; // no directory yet (the first fill makes it), or not ours to read
        }

        var (files, bytes) = (0, 0L);
        foreach (var name in names)
        {
            try
            {
                long length;
                using (var probe = File.OpenHandle(name, FileMode.Open, FileAccess.ReadWrite, FileShare.None))
                {
                    length = RandomAccess.GetLength(probe);
                }

                // No live sidekick opens an existing file by name (each creates its own): nothing can take it now.
                File.Delete(name);
                files++;
                bytes += length;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Locked by the sidekick using it, gone meanwhile, or another user's.
            }
        }

        return (files, bytes);
    }

    /// <summary>.NET's own switch (runtimeconfig or environment) that turns off the flock behind FileShare.None.</summary>
    private static bool FileLockingDisabled() =>
        (AppContext.TryGetSwitch("System.IO.DisableFileLocking", out var disabled) && disabled) ||
        Environment.GetEnvironmentVariable("DOTNET_SYSTEM_IO_DISABLEFILELOCKING") is { } value &&
        (value == "1" || value.Equals("true", StringComparison.OrdinalIgnoreCase));

    /// <summary>The bytes free on the spool directory's file system for this process, or null when that cannot be told.</summary>
    public long? FreeSpace()
    {
        if (FreeSpaceForTests is { } fake)
        {
            return fake();
        }

        try
        {
            // The directory is made by the first fill: until then, the file system it will be on.
            var path = _directory;
            while (!Directory.Exists(path) && Path.GetDirectoryName(path) is { Length: > 0 } parent)
            {
                path = parent;
            }

            return new DriveInfo(path).AvailableFreeSpace;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return null;
        }
    }

    /// <summary>A fill is done with its file (upload and readers finished): kept for the next fill, or deleted.</summary>
    public void Return(SafeFileHandle file)
    {
        long reserved;
        bool growing;
        lock (_lock)
        {
            _reservations.Remove(file, out reserved);
            growing = _growing.Remove(file);
        }

        if (growing)
        {
            Release(reserved);
            file.Dispose(); // sparse, as long as the object: not a file to hand on (opened DeleteOnClose)
            return;
        }

        long size;
        try
        {
            size = RandomAccess.GetLength(file);
        }
        catch (IOException)
        {
            Release(reserved);
            file.Dispose();
            return;
        }

        bool keep, first;
        lock (_lock)
        {
            _reserved -= reserved;
            keep = !file.IsClosed && _reserved + _keptBytes + size <= Capacity;
            first = _kept.Count == 0;
            if (keep)
            {
                _kept.Add(new KeptFile(file, size, _time.GetTimestamp()));
                _keptBytes += size;
            }
        }

        if (!keep)
        {
            file.Dispose(); // opened DeleteOnClose: the file goes with the handle
        }
        else if (first)
        {
            _sweeper.Change(Linger, Timeout.InfiniteTimeSpan); // otherwise a sweep is due already, and comes back for this one
        }
    }

    public void Dispose()
    {
        _sweeper.Dispose();
        lock (_lock)
        {
            _kept.ForEach(k => k.Handle.Dispose());
            _kept.Clear();
            _keptBytes = 0;
        }
    }

    private void Release(long length)
    {
        lock (_lock)
        {
            _reserved -= length;
        }
    }

    /// <summary>Deletes the files kept longer than <see cref="Linger"/>; comes back for the others.</summary>
    private void Sweep()
    {
        var expired = new List<KeptFile>();
        TimeSpan? next = null;
        lock (_lock)
        {
            foreach (var kept in _kept.ToArray())
            {
                var idle = _time.GetElapsedTime(kept.Since);
                if (idle >= Linger)
                {
                    _kept.Remove(kept);
                    _keptBytes -= kept.Size;
                    expired.Add(kept);
                }
                else if (next is null || Linger - idle < next)
                {
                    next = Linger - idle;
                }
            }
        }

        expired.ForEach(k => k.Handle.Dispose());
        if (next is { } due)
        {
            _sweeper.Change(due, Timeout.InfiniteTimeSpan);
        }
    }

    private sealed record KeptFile(SafeFileHandle Handle, long Size, long Since);
}

/// <summary>The spool directory's file system has no room for a fill's body (however large the budget is).</summary>
internal sealed class SpoolDiskFullException(string message, Exception? inner) : IOException(message, inner);
