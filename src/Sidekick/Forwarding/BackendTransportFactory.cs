using System.Net;
using System.Net.Http;
using System.Net.Security;
using System.Net.Sockets;

namespace Sidekick.Forwarding;

/// <summary>
/// Creates the connection pool of a site. Settings follow upstream sidekick (idle 15 s, connect 10 s,
/// no response timeout) and YARP's forwarder advice (no redirects, no decompression, no cookies).
/// </summary>
internal sealed class BackendTransportFactory(
    Func<string, SslClientAuthenticationOptions>? tlsOptions = null,
    Func<SocketsHttpConnectionContext, CancellationToken, ValueTask<Stream>>? connect = null,
    bool environmentProxy = false)
{
    public static readonly TimeSpan ExpectContinueTimeout = TimeSpan.FromSeconds(1);

    /// <param name="firstEndpoint">Any endpoint of the site (they share a scheme).</param>
    /// <param name="serverName">TLS name to verify and send as SNI; null for the endpoint's own host.</param>
    /// <param name="allOnLoopback">Every backend of the site is on loopback (<see cref="Topology.Backend.OnLoopback"/>).</param>
    public HttpMessageInvoker Create(Uri firstEndpoint, string? serverName = null, bool allOnLoopback = false)
    {
        // A loopback backend never goes through the environment's proxy (as Go's ProxyFromEnvironment): a site of
        // loopback backends only takes the TLS path below, as without a proxy. In a site that mixes them, the
        // handler's proxy (LoopbackBypassProxy) still sends the loopback ones direct.
        var proxied = environmentProxy && !allOnLoopback;
        var handler = new SocketsHttpHandler
        {
            UseProxy = environmentProxy,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = true,
            PooledConnectionIdleTimeout = BackendLimits.IdleConnectionTimeout,
            ConnectTimeout = BackendLimits.ConnectTimeout,
            // S3 PUTs send Expect: 100-continue. The body goes when the backend says 100 and never when it
            // answers first; a backend that says nothing gets it after 1 s (Go's and curl's default), not 15 s.
            Expect100ContinueTimeout = ExpectContinueTimeout,
#pragma warning disable CA2262 // The value is in KiB on purpose.
            MaxResponseHeadersLength = BackendLimits.MaxResponseHeadBytes / 1024,
#pragma warning restore CA2262
            // Trace context is the application's business; do not inject our own headers.
            ActivityHeadersPropagator = null,
        };

        if (environmentProxy)
        {
            handler.Proxy = LoopbackBypassProxy.FromEnvironment();
        }

        if (connect is not null)
        {
            handler.ConnectCallback = connect;
        }

        if (tlsOptions is null || firstEndpoint.Scheme != Uri.UriSchemeHttps)
        {
            return new HttpMessageInvoker(handler, disposeHandler: true);
        }

        if (proxied)
        {
            // Through an HTTP proxy the handler must see the https scheme (it tunnels with CONNECT), so it does the
            // TLS itself, and names the backend after the request's Host as below; the HTTP/1.1 path is off anyway.
            handler.SslOptions = tlsOptions(serverName ?? firstEndpoint.IdnHost);
            return new HttpMessageInvoker(handler, disposeHandler: true);
        }

        // The TLS is done here, on the connection, with the backend's own name, and the handler is handed plain
        // requests. Left to SocketsHttpHandler, the name it sends as SNI, verifies the certificate against and keys
        // its connection pools by is the request's Host header, which is the client's: any client could make the
        // handshake fail (a backend marked down for it, traffic pushed to the next site) or open a new TLS connection
        // per spelling of a Host.
        // The handler sees plain http requests here: a proxy it chose would get them in clear. Only a site of loopback
        // backends (never proxied) reaches this with a proxy in the environment.
        handler.UseProxy = false;
        var plain = connect ?? ConnectDirectAsync;
        handler.ConnectCallback = async (context, cancellationToken) =>
        {
            var stream = await plain(context, cancellationToken);
            var tls = new SslStream(stream, leaveInnerStreamOpen: false);
            try
            {
                var options = tlsOptions(serverName ?? context.DnsEndPoint.Host);
                options.ApplicationProtocols = [SslApplicationProtocol.Http11];
                await tls.AuthenticateAsClientAsync(options, cancellationToken);
                return tls;
            }
            catch
            {
                await tls.DisposeAsync();
                throw;
            }
        };
        return new HttpMessageInvoker(new PlainBelowTls(handler), disposeHandler: true);
    }

    private static async ValueTask<Stream> ConnectDirectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Sends an https request to the handler as http to the same port, whose connections are TLS already (see the
    /// connect callback). A request without a Host field gets the one the https URI implies, not "host:443".
    /// </summary>
    private sealed class PlainBelowTls(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.RequestUri is { Scheme: "https" } uri)
            {
                request.Headers.Host ??= uri.IsDefaultPort ? uri.IdnHost : $"{uri.IdnHost}:{uri.Port}";
                request.RequestUri = new UriBuilder(uri) { Scheme = Uri.UriSchemeHttp, Port = uri.Port }.Uri;
            }

            return base.SendAsync(request, cancellationToken);
        }
    }
}
