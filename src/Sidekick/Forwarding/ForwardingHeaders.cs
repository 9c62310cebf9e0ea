using Microsoft.Extensions.Primitives;

namespace Sidekick.Forwarding;

/// <summary>
/// The one header policy for a request to a backend, whichever forwarder writes it (the HTTP/1.1 path's
/// <see cref="Http1.RequestHead"/> or YARP's <see cref="SidekickTransformer"/>, for proxied and cache
/// requests alike): the client's fields are copied as they came except those below, and sidekick sets Host
/// (the client's, byte for byte: SigV4 signs it), X-Forwarded-For (the client's chain continued),
/// X-Real-IP and X-Forwarded-Host itself.
/// </summary>
internal static class ForwardingHeaders
{
    public const string ForwardedFor = "X-Forwarded-For";
    public const string RealIp = "X-Real-IP";
    public const string ForwardedHost = "X-Forwarded-Host";

    /// <summary>RFC 7239's field, read (never written) for the client's address in traces.</summary>
    public const string Forwarded = "Forwarded";

    /// <summary>The response field that says a proxy answered, on every proxied response (as upstream).</summary>
    public const string ProxyMarkerName = "X-Proxy";

    public static readonly StringValues ProxyMarker = new("true");

    /// <summary>
    /// Whether the client's field goes to the backend as it came: not a pseudo-header, not hop-by-hop or named
    /// in Connection, not a field sidekick sets itself, and not Content-Length (each forwarder frames the body
    /// it actually sends).
    /// </summary>
    public static bool IsCopied(string name, bool clientSentHost, List<string>? connectionNamed) =>
        name.Length > 0 && name[0] != ':' &&
        !name.Equals("Host", StringComparison.OrdinalIgnoreCase) &&
        !name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase) &&
        !name.Equals(ForwardedFor, StringComparison.OrdinalIgnoreCase) &&
        !name.Equals(RealIp, StringComparison.OrdinalIgnoreCase) &&
        !(clientSentHost && name.Equals(ForwardedHost, StringComparison.OrdinalIgnoreCase)) &&
        !HopByHopHeaders.Contains(name) &&
        !HopByHopHeaders.IsNamed(connectionNamed, name);

    /// <summary>X-Forwarded-For: the client's chain (its field lines joined) continued with the client's address.</summary>
    public static string ForwardedForValue(StringValues prior, string clientIp) =>
        prior.Count == 0 ? clientIp : $"{prior}, {clientIp}";
}
