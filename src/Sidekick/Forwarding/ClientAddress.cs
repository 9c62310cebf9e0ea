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

    /// <summary>How long a failed look-up of the host's address is not tried again (each request meanwhile gets <see cref="Unknown"/>).</summary>
    private const long RetryMilliseconds = 5_000;

    private static string? s_hostAddress; // once found, for the life of the process
    private static long s_retryAt;

    public static string For(IPAddress? peer)
    {
        if (peer is null)
        {
            return HostAddress();
        }

        if (peer.IsIPv4MappedToIPv6)
        {
            peer = peer.MapToIPv4();
        }

        return IPAddress.IsLoopback(peer) ? HostAddress() : peer.ToString();
    }

    /// <summary>
    /// Looks the host's address up at start, not at a first loopback request: the look-up reads /proc/net/route and
    /// netlink, which needs descriptors a shortage of them would deny to that request.
    /// </summary>
    public static void Prime() => HostAddress();

    /// <summary>
    /// The host's address, found once. A look-up that fails (out of descriptors, /proc unreadable) is not kept: that
    /// request reports <see cref="Unknown"/>, and a later one tries again. Kept in a Lazy, one failure answered every
    /// loopback client with a bare 500 for the life of the process.
    /// </summary>
    private static string HostAddress()
    {
        if (Volatile.Read(ref s_hostAddress) is { } known)
        {
            return known;
        }

        var now = Environment.TickCount64;
        if (now < Volatile.Read(ref s_retryAt))
        {
            return Unknown;
        }

        if (FindHostAddress() is { } found)
        {
            Volatile.Write(ref s_hostAddress, found);
            return found;
        }

        Volatile.Write(ref s_retryAt, now + RetryMilliseconds);
        return Unknown;
    }

    /// <summary>The first non-loopback IPv4 address, else IPv6, else <see cref="Unknown"/>; null when the look-up failed.</summary>
    private static string? FindHostAddress()
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
        catch (Exception ex) when (ex is NetworkInformationException or IOException or UnauthorizedAccessException or SocketException)
        {
            return null;
        }

        return v6?.ToString() ?? Unknown;
    }
}
