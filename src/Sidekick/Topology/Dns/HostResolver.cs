using System.Net;

namespace Sidekick.Topology.Dns;

/// <summary>Resolves a host name to addresses; the seam tests use to feed DNS answers.</summary>
internal interface IHostResolver
{
    Task<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken);
}

/// <summary>The operating system's resolver (A and AAAA records, /etc/hosts).</summary>
internal sealed class SystemHostResolver : IHostResolver
{
    public static readonly SystemHostResolver Instance = new();

    public Task<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken) =>
        System.Net.Dns.GetHostAddressesAsync(host, cancellationToken);
}
