using System.Net;

namespace Sidekick.Forwarding;

/// <summary>
/// The environment's proxy (HTTP_PROXY, HTTPS_PROXY, NO_PROXY and their lowercase forms, as .NET reads them) with Go's
/// rule on top: a request to <c>localhost</c> or a loopback address (127.0.0.0/8, ::1) never goes through a proxy
/// (Go's ProxyFromEnvironment; a proxy elsewhere cannot reach this host's loopback anyway). .NET's own environment
/// proxy bypasses only what NO_PROXY names.
/// </summary>
internal sealed class LoopbackBypassProxy(IWebProxy inner) : IWebProxy
{
    /// <summary>The process's environment proxy with loopback bypassed.</summary>
    public static LoopbackBypassProxy FromEnvironment() => new(HttpClient.DefaultProxy);

    public ICredentials? Credentials
    {
        get => inner.Credentials;
        set => inner.Credentials = value;
    }

    public Uri? GetProxy(Uri destination) => IsLoopback(destination) ? null : inner.GetProxy(destination);

    public bool IsBypassed(Uri host) => IsLoopback(host) || inner.IsBypassed(host);

    /// <summary>As Go's useProxy: the name "localhost" (any case) or a loopback IP literal; other names are not resolved.</summary>
    public static bool IsLoopback(Uri uri)
    {
        var host = uri.IdnHost;
        if (host.Equals("localhost", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        return IPAddress.TryParse(host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address);
    }
}
