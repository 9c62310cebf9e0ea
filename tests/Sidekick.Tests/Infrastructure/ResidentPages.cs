using System.Runtime.InteropServices;

namespace Sidekick.Tests;

/// <summary>Which pages are in memory, as mincore(2) tells: of a range of this process's memory, or of a file.</summary>
internal static class ResidentPages
{
    /// <summary>The resident pages of [<paramref name="address"/>, +<paramref name="length"/>) (page-aligned), and how many pages that is.</summary>
    public static int In(nint address, nuint length, out int pages)
    {
        var vector = new byte[((long)length + Environment.SystemPageSize - 1) / Environment.SystemPageSize];
        Assert.True(mincore(address, length, vector) == 0, $"mincore: errno {Marshal.GetLastPInvokeError()}");
        pages = vector.Length;
        return vector.Count(b => (b & 1) != 0);
    }

    /// <summary>
    /// How much of a file is in the page cache (what util-linux's fincore tells, without needing that tool): a
    /// read-only mapping of it, looked at with mincore. The file is opened with open(2) itself: sidekick holds its
    /// spool files under an exclusive lock that .NET's own open would respect.
    /// </summary>
    public static long BytesOfFile(string file)
    {
        var fd = Sidekick.Platform.Libc.open(file, 0 /* O_RDONLY */);
        Assert.True(fd >= 0, $"open {file}: errno {Marshal.GetLastPInvokeError()}");
        using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        var length = RandomAccess.GetLength(handle);
        if (length == 0)
        {
            return 0;
        }

        var mapping = mmap(0, (nuint)length, 1 /* PROT_READ */, 1 /* MAP_SHARED */, fd, 0);
        Assert.True(mapping != -1, $"mmap {file}: errno {Marshal.GetLastPInvokeError()}");
        try
        {
            return (long)In(mapping, (nuint)length, out _) * Environment.SystemPageSize;
        }
        finally
        {
            _ = munmap(mapping, (nuint)length);
        }
    }

    // A byte array is pinned, not copied, so mincore writes into it directly.
    [DllImport("libc", SetLastError = true)]
    private static extern int mincore(nint address, nuint length, [Out] byte[] vector);

    [DllImport("libc", SetLastError = true)]
    private static extern nint mmap(nint address, nuint length, int protection, int flags, int fd, long offset);

    [DllImport("libc", SetLastError = true)]
    private static extern int munmap(nint address, nuint length);
}
