using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;

namespace Sidekick.Forwarding;

/// <summary>
/// Works out the client address reported to backends. A sidecar's clients usually connect over loopback,
/// which tells the backend nothing, so upstream reports this host's address instead; we keep that and make
/// the choice deterministic: the first non-loopback IPv4 address, else IPv6, else a placeholder.
/// </summary>
internal static class ClientAddress
{
    public const string Unknown = "<unknown-address>";

    private static readonly Lazy<string> HostAddress = new(FindHostAddress);

    public static string For(IPAddress? peer)
    {
        if (peer is null)
        {
            return HostAddress.Value;
        }

        if (peer.IsIPv4MappedToIPv6)
        {
            peer = peer.MapToIPv4();
        }

        return IPAddress.IsLoopback(peer) ? HostAddress.Value : peer.ToString();
    }

    private static string FindHostAddress()
    {
        IPAddress? v6 = null;
        try
        {
            foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
            {
                if (nic.OperationalStatus != OperationalStatus.Up || nic.NetworkInterfaceType == NetworkInterfaceType.Loopback)
                {
                    continue;
                }

                foreach (var unicast in nic.GetIPProperties().UnicastAddresses)
                {
                    var address = unicast.Address;
                    if (IPAddress.IsLoopback(address))
                    {
                        continue;
                    }

                    if (address.AddressFamily == AddressFamily.InterNetwork)
                    {
                        return address.ToString();
                    }

                    if (v6 is null && address.AddressFamily == AddressFamily.InterNetworkV6 && !address.IsIPv6LinkLocal)
                    {
                        v6 = address;
                    }
                }
            }
        }
        catch (NetworkInformationException)
        {
        }

        return v6?.ToString() ?? Unknown;
    }
}
