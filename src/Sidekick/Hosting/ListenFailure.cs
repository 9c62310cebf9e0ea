using System.Net;
using System.Net.Sockets;

namespace Sidekick.Hosting;

/// <summary>
/// Turns a refused bind into one line that names the flag, its value and what would work. Kestrel reports a
/// busy port as an IOException but every other refusal (EACCES, EADDRNOTAVAIL, EAFNOSUPPORT) as the raw
/// SocketException, without the endpoint; the transports therefore tell <see cref="Attempt"/> which endpoint
/// they are binding (Kestrel binds one at a time, so the last one is the one that failed).
/// </summary>
internal sealed class ListenFailure
{
    private EndPoint? _last;

    /// <summary>Called by a transport just before it binds <paramref name="endpoint"/>.</summary>
    public void Attempt(EndPoint endpoint) => Volatile.Write(ref _last, endpoint);

    /// <summary>The endpoint bound last, the failed one when a start failed.</summary>
    public EndPoint? Last => Volatile.Read(ref _last);

    /// <summary>The socket error behind a failed start, or null when it was not a refused bind.</summary>
    public static SocketError? ErrorOf(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is SocketException socket)
            {
                return socket.SocketErrorCode;
            }
        }

        return null;
    }

    /// <summary>Why the kernel refused <paramref name="endpoint"/>, in words an operator can act on.</summary>
    public static string Reason(SocketError error, IPEndPoint? endpoint, string fallback)
    {
        var port = endpoint?.Port.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "PORT";
        var ipv6 = endpoint?.AddressFamily == AddressFamily.InterNetworkV6;
        return error switch
        {
            SocketError.AddressAlreadyInUse => $"port {port} is already in use by another process",
            SocketError.AddressNotAvailable =>
                $"{endpoint?.Address} is not an address of this host{(ipv6 ? " (or IPv6 is disabled here)" : "")}; use one of its addresses, or \":{port}\" for all of them",
            SocketError.AccessDenied when endpoint is { Port: > 0 and < 1024 } =>
                $"port {port} is privileged: it needs root or the CAP_NET_BIND_SERVICE capability; use a port from 1024 up, e.g. \":8080\"",
            SocketError.AccessDenied => "permission denied",
            SocketError.AddressFamilyNotSupported => $"IPv6 is not available on this host; use an IPv4 address such as \"127.0.0.1:{port}\", or \":{port}\"",
            _ => fallback,
        };
    }
}
