using System.Runtime.InteropServices;

namespace Sidekick.Hosting;

/// <summary>
/// The process's open-files limit (RLIMIT_NOFILE). At start-up its soft value is raised to the hard one, as Go's
/// runtime does for every program since Go 1.19 (so upstream's sidekick runs with it) and the .NET host does for
/// JIT-compiled programs, but a Native AOT binary does not: under systemd (soft 1024, hard 524288) the default
/// connection limit would otherwise be 640 clients where upstream takes hundreds of thousands.
/// The default client connection limit comes from it: past it, accept fails with EMFILE for everyone, backend
/// connections and probes included. Two thirds of the descriptors go to client connections; the rest is room for
/// the backend connections of the busy ones, probes and files.
/// </summary>
internal static partial class DescriptorLimit
{
    private const int RlimitNofile = 7; // Linux, x64 and arm64
    private const int Reserved = 64;

    /// <summary>Raises the soft limit to the hard one; false when it could not be raised (the limit stays as it was).</summary>
    public static bool RaiseToHard()
    {
        if (!OperatingSystem.IsLinux() || getrlimit(RlimitNofile, out var limit) != 0)
        {
            return true;
        }

        if (limit.Current >= limit.Maximum)
        {
            return true;
        }

        limit.Current = limit.Maximum;
        return setrlimit(RlimitNofile, in limit) == 0;
    }

    /// <summary>The soft limit now; null when unknown or unlimited.</summary>
    public static long? Current() =>
        OperatingSystem.IsLinux() && getrlimit(RlimitNofile, out var limit) == 0 && limit.Current < long.MaxValue ? (long)limit.Current : null;

    /// <summary>The default for <c>--max-connections</c>; null (unlimited) when the limit is unknown or unlimited.</summary>
    public static long? DefaultConnections() =>
        Current() is { } current ? Math.Max(Reserved, (current - Reserved) * 2 / 3) : null;

    [StructLayout(LayoutKind.Sequential)]
    private struct ResourceLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getrlimit(int resource, out ResourceLimit limit);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setrlimit(int resource, in ResourceLimit limit);
}
