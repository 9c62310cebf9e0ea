using System.Net;
using Sidekick.Cli;

namespace Sidekick.Forwarding;

/// <summary>
/// The peers whose word sidekick takes for where a request came from (--trusted-proxies): the X-Forwarded-For chain
/// they send is continued, and their Forwarded, X-Forwarded-Proto, -Host (and the like, <see cref="IsClaim"/>) reach the backend. From any
/// other peer those fields are the client's own claims: MinIO takes the first X-Forwarded-For entry as the source
/// address its aws:SourceIp policies check, so a client could name any address it liked. Such a peer's chain is
/// replaced by its own address and its claims are dropped; the trace names the peer too. Loopback is trusted by
/// default: a sidecar's clients (or a proxy in front of it on the same host) connect over it, and they can reach
/// the backends with any field they like anyway.
/// </summary>
internal sealed class TrustedProxies
{
    public const string DefaultText = "127.0.0.0/8,::1";

    private readonly IPNetwork[] _networks;

    private TrustedProxies(IPNetwork[] networks) => _networks = networks;

    /// <summary>The peers trusted when no flag says otherwise: loopback.</summary>
    public static TrustedProxies Default { get; } = Parse(DefaultText);

    /// <summary>
    /// The process's setting, read by both forwarders and the trace. Set once as the server starts: every in-process
    /// server of the test suite runs with the default, so no two disagree.
    /// </summary>
    public static TrustedProxies Current { get; set; } = Default;

    /// <summary>A comma-separated list of addresses and CIDR ranges; empty trusts no peer.</summary>
    public static TrustedProxies Parse(string? text)
    {
        var networks = new List<IPNetwork>();
        foreach (var part in (text ?? "").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (IPNetwork.TryParse(part, out var network))
            {
                networks.Add(network);
            }
            else if (IPAddress.TryParse(part, out var address))
            {
                networks.Add(new IPNetwork(address, address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128));
            }
            else
            {
                throw new UsageException($"invalid --trusted-proxies entry \"{part}\": expected an IP address or a CIDR range such as 10.0.0.0/8, comma-separated");
            }
        }

        return new TrustedProxies([.. networks]);
    }

    public bool Trusts(IPAddress? peer)
    {
        if (peer is null)
        {
            return false;
        }

        if (peer.IsIPv4MappedToIPv6)
        {
            peer = peer.MapToIPv4();
        }

        foreach (var network in _networks)
        {
            if (network.Contains(peer))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// The client's fields that only a trusted peer may pass on (besides X-Forwarded-For, whose chain is continued or
    /// replaced): they claim a scheme, host, port or address for the request. MinIO reads X-Forwarded-Scheme exactly
    /// as X-Forwarded-Proto (the scheme of the Location and STS answers it builds); X-Forwarded-Ssl, -Protocol and
    /// -Port are the same claims in other frameworks' spelling (Rack, Rails).
    /// </summary>
    public static bool IsClaim(string name) => name.Length switch
    {
        9 => name.Equals("Forwarded", StringComparison.OrdinalIgnoreCase),
        15 => name.Equals("X-Forwarded-Ssl", StringComparison.OrdinalIgnoreCase),
        16 => name.Equals(ForwardingHeaders.ForwardedHost, StringComparison.OrdinalIgnoreCase) ||
              name.Equals("X-Forwarded-Port", StringComparison.OrdinalIgnoreCase),
        17 => name.Equals("X-Forwarded-Proto", StringComparison.OrdinalIgnoreCase),
        18 => name.Equals("X-Forwarded-Scheme", StringComparison.OrdinalIgnoreCase),
        20 => name.Equals("X-Forwarded-Protocol", StringComparison.OrdinalIgnoreCase),
        _ => false,
    };
}
