using System.Net;
using System.Net.Http;
using System.Net.Security;

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
    public HttpMessageInvoker Create(Uri firstEndpoint, string? serverName = null)
    {
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

        if (tlsOptions is not null && firstEndpoint.Scheme == Uri.UriSchemeHttps)
        {
            handler.SslOptions = tlsOptions(serverName ?? firstEndpoint.IdnHost);
        }

        if (connect is not null)
        {
            handler.ConnectCallback = connect;
        }

        return new HttpMessageInvoker(handler, disposeHandler: true);
    }
}
