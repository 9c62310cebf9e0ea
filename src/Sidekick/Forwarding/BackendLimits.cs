namespace Sidekick.Forwarding;

/// <summary>Limits on a backend exchange that both forwarding paths apply, defined once (upstream's values).</summary>
internal static class BackendLimits
{
    /// <summary>Time to open a connection to a backend (upstream: 10 s).</summary>
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    /// <summary>How long an idle kept-alive backend connection is kept (upstream: 15 s).</summary>
    public static readonly TimeSpan IdleConnectionTimeout = TimeSpan.FromSeconds(15);

    /// <summary>Largest backend response head accepted: Go's 1 MiB limit.</summary>
    public const int MaxResponseHeadBytes = 1024 * 1024;
}
