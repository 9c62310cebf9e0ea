using System.Reflection;
using System.Runtime.InteropServices;

namespace Sidekick.Observability;

/// <summary>
/// What is running: the version stamped at build time (scripts/package.sh passes the one it derives from git as
/// <c>-p:Version</c>; a plain build says 0.0.0-dev), the commit the SDK appends to the informational version,
/// and the .NET runtime. Shown by <c>--version</c> and the <c>sidekick_build_info</c> metric.
/// </summary>
internal sealed class BuildInfo
{
    private BuildInfo(string version, string commit, string runtime)
    {
        Version = version;
        Commit = commit;
        Runtime = runtime;
    }

    public static BuildInfo Current { get; } = FromInformationalVersion(
        typeof(BuildInfo).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion);

    /// <summary>e.g. 1.2.3 (built from tag v1.2.3), 0.0.0-g1a2b3c4 (an untagged commit), 0.0.0-dev.</summary>
    public string Version { get; }

    /// <summary>The full commit id, or "unknown" when the build saw no git repository.</summary>
    public string Commit { get; }

    public string Runtime { get; }

    /// <summary>
    /// Splits "VERSION+COMMIT": the SDK appends the commit (SourceRevisionId) after a '+', and package.sh never
    /// puts a '+' in the version itself, so the first one separates them.
    /// </summary>
    internal static BuildInfo FromInformationalVersion(string? informational)
    {
        var text = string.IsNullOrEmpty(informational) ? "0.0.0-dev" : informational;
        var plus = text.IndexOf('+', StringComparison.Ordinal);
        var version = plus < 0 ? text : text[..plus];
        var commit = plus < 0 || plus == text.Length - 1 ? "unknown" : text[(plus + 1)..];
        return new BuildInfo(version, commit, RuntimeInformation.FrameworkDescription);
    }
}
