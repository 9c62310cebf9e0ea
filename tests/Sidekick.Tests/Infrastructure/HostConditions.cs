using System.Diagnostics;

namespace Sidekick.Tests.Infrastructure;

/// <summary>
/// What this host lets a test do to a sidekick process: run it as an unprivileged user (tests usually run as
/// root, which no permission stops) and run it in a network namespace of its own (to switch IPv6 off).
/// Each answer comes with the reason when the answer is no, for the skip message.
/// </summary>
internal static class HostConditions
{
    /// <summary>A port below 1024, refused to unprivileged users unless the host lowered the limit.</summary>
    public const int PrivilegedPort = 80;

    private static readonly Lazy<(IReadOnlyList<string>? Launcher, string? WhyNot)> s_unprivileged = new(FindUnprivilegedLauncher);
    private static readonly Lazy<string?> s_namespace = new(ProbeNetworkNamespace);

    /// <summary>The command that runs sidekick as an unprivileged user (empty: the tests already are one).</summary>
    public static IReadOnlyList<string> Unprivileged => s_unprivileged.Value.Launcher ?? throw new InvalidOperationException(s_unprivileged.Value.WhyNot);

    public static string? WhyNotUnprivileged => s_unprivileged.Value.WhyNot;

    public static string? WhyNoPrivilegedPort
    {
        get
        {
            if (WhyNotUnprivileged is { } reason)
            {
                return reason;
            }

            const string limit = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
            return File.Exists(limit) && int.TryParse(File.ReadAllText(limit).Trim(), System.Globalization.CultureInfo.InvariantCulture, out var start) && start <= PrivilegedPort
                ? $"net.ipv4.ip_unprivileged_port_start is {start}: every user may bind port {PrivilegedPort} here"
                : null;
        }
    }

    /// <summary>Why sidekick cannot be run in a new network namespace here (null when it can).</summary>
    public static string? WhyNoNetworkNamespace => s_namespace.Value;

    private static (IReadOnlyList<string>?, string?) FindUnprivilegedLauncher()
    {
        if (!OperatingSystem.IsLinux())
        {
            return (null, "needs Linux");
        }

        if (!Environment.IsPrivilegedProcess)
        {
            return ([], null);
        }

        if (!File.Exists("/usr/bin/setpriv"))
        {
            return (null, "the tests run as root and setpriv (util-linux) is not installed to run sidekick as nobody");
        }

        // nobody must be able to reach and read the built program.
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (!directory.UnixFileMode.HasFlag(UnixFileMode.OtherExecute))
            {
                return (null, $"the tests run as root and nobody cannot enter {directory.FullName} to run sidekick");
            }
        }

        if (!File.GetUnixFileMode(Path.Combine(AppContext.BaseDirectory, "sidekick.dll")).HasFlag(UnixFileMode.OtherRead))
        {
            return (null, "the tests run as root and nobody cannot read sidekick.dll");
        }

        return (["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"], null);
    }

    private static string? ProbeNetworkNamespace()
    {
        if (!File.Exists("/usr/bin/unshare"))
        {
            return "unshare (util-linux) is not installed";
        }

        try
        {
            using var probe = Process.Start(new ProcessStartInfo("/usr/bin/unshare", ["--net", "true"]) { RedirectStandardError = true })!;
            var error = probe.StandardError.ReadToEnd();
            probe.WaitForExit();
            return probe.ExitCode == 0 ? null : $"cannot create a network namespace here (needs root with CAP_SYS_ADMIN): {error.Trim()}";
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return $"cannot run unshare: {ex.Message}";
        }
    }
}

/// <summary>A theory that runs sidekick as an unprivileged user; skipped, with the reason, where none can be used.</summary>
public sealed class UnprivilegedTheoryAttribute : TheoryAttribute
{
    public UnprivilegedTheoryAttribute() => Skip = HostConditions.WhyNotUnprivileged;
}

/// <summary>A theory that needs a port this host refuses to unprivileged users.</summary>
public sealed class PrivilegedPortTheoryAttribute : TheoryAttribute
{
    public PrivilegedPortTheoryAttribute() => Skip = HostConditions.WhyNoPrivilegedPort;
}

/// <summary>A theory that runs sidekick in a network namespace of its own.</summary>
public sealed class NetworkNamespaceTheoryAttribute : TheoryAttribute
{
    public NetworkNamespaceTheoryAttribute() => Skip = HostConditions.WhyNoNetworkNamespace;
}
