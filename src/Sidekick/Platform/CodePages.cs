using System.Globalization;

namespace Sidekick.Platform;

/// <summary>
/// Unmaps the executable's clean code and read-only pages, so the resident set holds only the code that runs
/// again. Linux maps file pages in 64 KiB runs around each one touched (fault-around), so parsing flags,
/// building the host and binding the listener leave most of the ~19 MB binary mapped (measured: ~15 MB), most
/// of it never needed again; later, each burst of closed connections and the heap compaction after it run code
/// the steady state does not (HTTP/2 over TLS: 6.7 MB of the binary resident in a first round of connections,
/// 8.0 MB in the next ones). Released once start-up is over and after each compaction. The pages stay in the
/// page cache (shared by every sidekick on the host) and come back on first use, one minor fault each; the
/// process's private memory does not change.
/// </summary>
internal static class CodePages
{
    private const int MadviseDontNeed = 4;

    /// <summary>Releases what it can; returns the bytes unmapped (0 where not Linux or nothing was safe to drop).</summary>
    public static long Release()
    {
        if (!OperatingSystem.IsLinux())
        {
            return 0;
        }

        try
        {
            var executable = File.ResolveLinkTarget("/proc/self/exe", returnFinalTarget: true)?.FullName;
            if (executable is null)
            {
                return 0;
            }

            long released = 0;
            foreach (var (start, length) in CleanMappingsOf(executable, File.ReadLines("/proc/self/smaps")))
            {
                if (Libc.madvise((nint)start, (nuint)length, MadviseDontNeed) == 0)
                {
                    released += (long)length;
                }
            }

            return released;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A sandbox without /proc: nothing is lost but a few megabytes of resident (shared) pages.
            return 0;
        }
    }

    /// <summary>
    /// The read-only mappings of <paramref name="path"/> with no privately modified page. Writable mappings
    /// and relocated read-only ones (RELRO) hold private data that dropping would lose, so they are skipped.
    /// </summary>
    internal static IEnumerable<(ulong Start, ulong Length)> CleanMappingsOf(string path, IEnumerable<string> smaps)
    {
        (ulong Start, ulong Length)? candidate = null;
        var zeroFields = 0;
        foreach (var line in smaps)
        {
            if (IsMappingHeader(line, out var start, out var end, out var permissions, out var mappedPath))
            {
                candidate = permissions[1] == '-' && mappedPath == path ? (start, end - start) : null;
                zeroFields = 0;
            }
            else if (candidate is not null && (line.StartsWith("Private_Dirty:", StringComparison.Ordinal) || line.StartsWith("Anonymous:", StringComparison.Ordinal)))
            {
                if (line.AsSpan(line.IndexOf(':') + 1).Trim() is "0 kB")
                {
                    zeroFields++;
                }
                else
                {
                    candidate = null;
                }
            }
            else if (line.StartsWith("VmFlags:", StringComparison.Ordinal))
            {
                // VmFlags closes each mapping's block; only a mapping seen to hold no private page qualifies.
                if (candidate is { } clean && zeroFields == 2)
                {
                    yield return clean;
                }

                candidate = null;
            }
        }
    }

    // "55a13aee4000-55a13b886000 r-xp 00021000 fe:00 11657217    /path/to/file"
    private static bool IsMappingHeader(string line, out ulong start, out ulong end, out string permissions, out string path)
    {
        start = end = 0;
        permissions = path = "";
        var parts = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length < 5 || parts[1].Length != 4 || parts[0].IndexOf('-') is not (> 0 and var dash))
        {
            return false;
        }

        if (!ulong.TryParse(parts[0].AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out start) ||
            !ulong.TryParse(parts[0].AsSpan(dash + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out end))
        {
            return false;
        }

        permissions = parts[1];
        path = parts.Length == 6 ? parts[5].Trim() : "";
        return true;
    }
}
