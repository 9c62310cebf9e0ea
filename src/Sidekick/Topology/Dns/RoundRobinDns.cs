using System.Net;
using System.Net.Sockets;

namespace Sidekick.Topology.Dns;

/// <summary>
/// --rr-dns-mode: a SITE with a single endpoint whose host is a name becomes one backend per A/AAAA record
/// (IPv6 in brackets), with the name kept for TLS. Re-run on every refresh, so records that appear and
/// disappear become backends that appear and disappear; unchanged ones keep their state.
/// </summary>
internal static class RoundRobinDns
{
    public static async Task<SiteDefinition> ExpandAsync(SiteDefinition site, IHostResolver resolver, Action<string> onError)
    {
        if (site.Backends is not [var only] || only.Endpoint.HostNameType != UriHostNameType.Dns)
        {
            return site;
        }

        var host = only.Endpoint.IdnHost;
        IPAddress[] addresses;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            addresses = await resolver.ResolveAsync(host, timeout.Token);
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException)
        {
            onError($"unable to lookup host {host}: {ex.Message}; will retry");
            return site with { Backends = [], ServerName = host };
        }

        var backends = addresses
            .Distinct()
            .OrderBy(a => a.AddressFamily == AddressFamily.InterNetworkV6 ? 1 : 0)
            .ThenBy(a => a.ToString(), StringComparer.Ordinal)
            .Select(address =>
            {
                var ip = address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
                var endpoint = new UriBuilder(only.Endpoint) { Host = ip }.Uri;
                var text = endpoint.GetLeftPart(UriPartial.Path).TrimEnd('/');
                // The probe keeps its path and port (the read path for the last site, --health-port) and its credentials.
                return only with { Endpoint = endpoint, EndpointText = text, ProbeUri = new UriBuilder(only.ProbeUri) { Host = ip }.Uri };
            })
            .ToArray();
        return site with { Backends = backends, ServerName = host };
    }
}
