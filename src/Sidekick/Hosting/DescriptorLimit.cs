using System.Runtime.InteropServices;

namespace Sidekick.Hosting;

/// <summary>
/// The default client connection limit, from the process's descriptor limit: past it, accept fails with
/// EMFILE for everyone, backend connections and probes included. Two thirds of the descriptors go to client
/// connections; the rest is room for the backend connections of the busy ones, probes and files.
/// </summary>
internal static partial class DescriptorLimit
{
    private const int RlimitNofile = 7; // Linux, x64 and arm64
    private const int Reserved = 64;

    /// <summary>The default for <c>--max-connections</c>; null (unlimited) when the limit is unknown or unlimited.</summary>
    public static long? DefaultConnections()
    {
        if (!OperatingSystem.IsLinux() || getrlimit(RlimitNofile, out var limit) != 0 || limit.Current >= long.MaxValue)
        {
            return null;
        }

        return Math.Max(Reserved, ((long)limit.Current - Reserved) * 2 / 3);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct ResourceLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getrlimit(int resource, out ResourceLimit limit);
}
