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

    /// <summary>
    /// Most field lines (obs-fold continuations included) accepted in a backend response head on the HTTP/1.1
    /// path; past it the head is refused as invalid (a 502, as for any malformed head). Generous: real heads carry
    /// tens, and nginx (proxy_buffer_size) and HAProxy (bufsize) bound a head to 4-16 KiB in practice. A bound
    /// on the lines, not only on the bytes, refuses a broken or hostile backend's head of 200,000 tiny fields
    /// early instead of parsing and copying it onto the client's response.
    /// </summary>
    public const int MaxResponseHeadFieldLines = 1000;
}
