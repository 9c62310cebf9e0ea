using System.Globalization;
using System.Net;
using Sidekick.Cli;

namespace Sidekick.Hosting;

/// <summary>
/// Parses a Go-style listen address: <c>:8080</c> (every interface), <c>127.0.0.1:8080</c>,
/// <c>[::1]:8080</c> or <c>localhost:8080</c>. Port 0 picks a free port.
/// </summary>
internal sealed record ListenAddress(string? Host, int Port)
{
    /// <param name="text">The flag's value.</param>
    /// <param name="flag">The flag it came from, named in messages.</param>
    public static ListenAddress Parse(string text, string flag = "--address")
    {
        var colon = text.LastIndexOf(':');
        if (colon < 0)
        {
            throw new UsageException($"invalid {flag} \"{text}\": expected host:port, e.g. \":8080\" or \"127.0.0.1:8080\"");
        }

        var host = text[..colon];
        var portText = text[(colon + 1)..];
        if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port > 65535)
        {
            throw new UsageException($"invalid {flag} \"{text}\": port \"{portText}\" must be a number in [0, 65535]");
        }

        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }
        else if (host.Contains(':', StringComparison.Ordinal))
        {
            throw new UsageException($"invalid {flag} \"{text}\": put IPv6 addresses in brackets, e.g. \"[::1]:8080\"");
        }

        return new ListenAddress(host.Length == 0 ? null : host, port);
    }

    /// <summary>The IP to bind, or null for every interface (IPv4 and IPv6).</summary>
    public IPAddress? BindAddress =>
        Host is null ? null :
        Host.Equals("localhost", StringComparison.OrdinalIgnoreCase) ? IPAddress.Loopback :
        IPAddress.TryParse(Host, out var ip) ? ip :
        ResolveOnce(Host);

    private static IPAddress ResolveOnce(string host)
    {
        try
        {
            return Dns.GetHostAddresses(host) is [var first, ..]
                ? first
                : throw new FatalException($"listen address host \"{host}\" does not resolve");
        }
        catch (System.Net.Sockets.SocketException ex)
        {
            throw new FatalException($"listen address host \"{host}\" does not resolve: {ex.Message}");
        }
    }
}
