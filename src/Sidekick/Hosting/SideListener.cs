using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Sidekick.Hosting;

/// <summary>
/// A listener beside the proxy's, on its own address: the admin endpoints (<c>--admin-address</c>) or the
/// diagnostics (<c>--pprof</c>). Plain HTTP/1.1; its requests never reach the proxy. Kestrel runs one
/// application for every listener, so a request is told apart by the local address it came in on.
/// </summary>
internal sealed class SideListener
{
    private ListenOptions? _listen;

    /// <param name="flag">The flag that asked for it, named in messages.</param>
    /// <param name="value">The flag's value as typed.</param>
    /// <param name="address">Where to listen (host null = every interface).</param>
    public SideListener(string flag, string value, ListenAddress address)
    {
        Flag = flag;
        Value = value;
        Address = address;
    }

    public string Flag { get; }

    public string Value { get; }

    public ListenAddress Address { get; }

    /// <summary>
    /// The admin listener: <c>:PORT</c> means the loopback address (127.0.0.1), unlike <c>--address</c>, so that
    /// state and metrics are not offered to the network by accident; <c>0.0.0.0:PORT</c> or <c>[::]:PORT</c> asks for that.
    /// </summary>
    public static SideListener Admin(string value)
    {
        var address = ListenAddress.Parse(value, "--admin-address");
        return new SideListener("--admin-address", value, address.Host is null ? address with { Host = "127.0.0.1" } : address);
    }

    /// <summary>The diagnostics listener of <c>--pprof</c>: <c>:PORT</c> is every interface, as upstream's.</summary>
    public static SideListener Diagnostics(string value) => new("--pprof", value, ListenAddress.Parse(value, "--pprof"));

    /// <summary>The endpoint bound (the real port when 0 was asked for); known once the server started.</summary>
    public IPEndPoint? BoundEndPoint => _listen?.IPEndPoint;

    /// <param name="headerTimeout">--client-header-timeout: a connection that sends nothing is closed after it, as on the
    /// proxy port. Without it a silent connection here was held for the idle timeout (2m10s), and --max-connections
    /// counts per listener: --pprof :PORT, open to the network, took another such share of descriptors four times as long.</param>
    public void Bind(KestrelServerOptions kestrel, TimeSpan headerTimeout, TimeProvider time)
    {
        void Plain(ListenOptions listen)
        {
            listen.Protocols = HttpProtocols.Http1;
            listen.Use(FirstByteTimeout.Create(headerTimeout, time));
            _listen = listen;
        }

        if (Address.BindAddress is { } ip)
        {
            kestrel.Listen(ip, Address.Port, Plain);
        }
        else
        {
            kestrel.ListenAnyIP(Address.Port, Plain);
        }
    }

    /// <summary>Whether a connection came in through this listener: its port, and its address unless it listens on every interface.</summary>
    public bool Serves(ConnectionInfo connection)
    {
        if (BoundEndPoint is not { } bound || connection.LocalPort != bound.Port)
        {
            return false;
        }

        return bound.Address.Equals(IPAddress.Any) || bound.Address.Equals(IPAddress.IPv6Any) ||
               (connection.LocalIpAddress is { } local && (local.Equals(bound.Address) || (local.IsIPv4MappedToIPv6 && local.MapToIPv4().Equals(bound.Address))));
    }

    /// <summary>
    /// Whether a request naming <paramref name="host"/> is answered here. A listener on a loopback address answers only
    /// requests that name a loopback host (localhost, 127.x.x.x, [::1]): a web page whose name its owner points at
    /// 127.0.0.1 (DNS rebinding) would otherwise read the state and metrics through an operator's browser on this
    /// host, its requests carrying the page's own name. Listeners on other addresses are named however the network
    /// names them (a scraper's target), so they answer any.
    /// </summary>
    public bool Admits(HostString host) =>
        BoundEndPoint is not { } bound || !IPAddress.IsLoopback(bound.Address) || NamesNoOtherHost(host);

    /// <summary>
    /// No Host at all (HTTP/1.0 health checkers send none; a browser always does), localhost, or a loopback address
    /// (brackets allowed), with any port.
    /// </summary>
    public static bool NamesNoOtherHost(HostString host)
    {
        if (!host.HasValue)
        {
            return true;
        }

        var name = host.Host.AsSpan().Trim('[').TrimEnd(']');
        return name.Equals("localhost", StringComparison.OrdinalIgnoreCase) ||
               (IPAddress.TryParse(name, out var address) && IPAddress.IsLoopback(address));
    }

    /// <summary>The answer to a request <see cref="Admits"/> refused: 421, the request was not meant for this server.</summary>
    public static Task MisdirectedAsync(HttpContext context)
    {
        context.Response.StatusCode = StatusCodes.Status421MisdirectedRequest;
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync("this listener is on a loopback address and answers requests for localhost only\n");
    }

    /// <summary>Whether a failed bind of <paramref name="endpoint"/> was this listener's.</summary>
    public bool Tried(IPEndPoint endpoint) => ListensOn(Address, endpoint);

    public static bool ListensOn(ListenAddress? address, IPEndPoint endpoint) =>
        address is not null && address.Port == endpoint.Port &&
        (address.BindAddress is not { } ip || ip.Equals(endpoint.Address));
}
