using System.Globalization;
using System.Text;

namespace Sidekick.Observability;

/// <summary>
/// The standard <c>process_*</c> series of the Prometheus clients (the Go sidekick exposed them through
/// client_golang), under the same names and meanings, so dashboards and alerts written for any exporter work:
/// resident and virtual memory, CPU seconds, open and allowed file descriptors, start time. On Linux they are
/// read from /proc/self at each scrape, as client_golang does; elsewhere from what .NET reports.
/// </summary>
internal static class ProcessMetrics
{
    /// <summary>/proc reports CPU time in USER_HZ ticks, which the kernel fixes at 100 per second for user space.</summary>
    private const double TicksPerSecond = 100;

    private static readonly Lazy<double> StartTime = new(ReadStartTime);

    public static void WriteTo(StringBuilder text)
    {
        if (ReadStat() is { } stat)
        {
            Metric(text, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", (stat.UserTicks + stat.SystemTicks) / TicksPerSecond);
            Metric(text, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", stat.ResidentPages * (double)Environment.SystemPageSize);
            Metric(text, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", stat.VirtualBytes);
        }
        else
        {
            Metric(text, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", Environment.CpuUsage.TotalTime.TotalSeconds);
            Metric(text, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", Environment.WorkingSet);
        }

        if (OpenDescriptors() is { } open)
        {
            Metric(text, "process_open_fds", "Number of open file descriptors.", "gauge", open);
        }

        if (MaxDescriptors() is { } max)
        {
            Metric(text, "process_max_fds", "Maximum number of open file descriptors.", "gauge", max);
        }

        Metric(text, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", StartTime.Value);
    }

    private static void Metric(StringBuilder text, string name, string help, string type, double value) =>
        text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n')
            .Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n')
            .Append(name).Append(' ').Append(value.ToString("0.###", CultureInfo.InvariantCulture)).Append('\n');

    private readonly record struct Stat(long UserTicks, long SystemTicks, long StartTicks, long VirtualBytes, long ResidentPages);

    /// <summary>The fields of /proc/self/stat this needs (proc(5)), or null where there is no /proc.</summary>
    private static Stat? ReadStat()
    {
        if (!OperatingSystem.IsLinux() || ReadText("/proc/self/stat") is not { } line)
        {
            return null;
        }

        // The command name (field 2) is in parentheses and may hold spaces and ')': fields start after the last ')'.
        var fields = line[(line.LastIndexOf(')') + 2)..].Split(' ');
        // fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
        return fields.Length < 22 ? null : new Stat(Long(fields[11]), Long(fields[12]), Long(fields[19]), Long(fields[20]), Long(fields[21]));
    }

    private static double ReadStartTime()
    {
        if (ReadStat() is { } stat && ReadText("/proc/stat") is { } system)
        {
            foreach (var line in system.Split('\n'))
            {
                if (line.StartsWith("btime ", StringComparison.Ordinal))
                {
                    return Long(line[6..]) + stat.StartTicks / TicksPerSecond;
                }
            }
        }

        using var process = System.Diagnostics.Process.GetCurrentProcess();
        return (process.StartTime.ToUniversalTime() - DateTime.UnixEpoch).TotalSeconds;
    }

    private static int? OpenDescriptors()
    {
        try
        {
            // The enumeration's own descriptor is counted too, as client_golang counts it.
            return OperatingSystem.IsLinux() ? Directory.EnumerateFileSystemEntries("/proc/self/fd").Count() : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The soft limit on open files (RLIMIT_NOFILE), from /proc/self/limits; null when unlimited or unknown.</summary>
    private static long? MaxDescriptors()
    {
        if (!OperatingSystem.IsLinux() || ReadText("/proc/self/limits") is not { } limits)
        {
            return null;
        }

        foreach (var line in limits.Split('\n'))
        {
            if (line.StartsWith("Max open files", StringComparison.Ordinal))
            {
                var soft = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return soft.Length > 0 && long.TryParse(soft[0], NumberStyles.None, CultureInfo.InvariantCulture, out var value) ? value : null;
            }
        }

        return null;
    }

    private static string? ReadText(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static long Long(string text) =>
        long.TryParse(text.AsSpan().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var value) ? value : 0;
}
