using System.Net;
using Amazon.Runtime;

namespace Sidekick.Caching;

/// <summary>
/// The HTTP clients the AWS SDK talks to the store through: the SDK's own settings (no redirects followed, no
/// decompression, its proxy, timeout and connection limit), with <c>Expect: 100-continue</c> kept for large bodies
/// only. The SDK asks for it on every PUT, so each lease write (an empty object, on a miss's way to its first byte)
/// and each small entry would wait a round trip for the store's 100 Continue before sending nothing or a few bytes.
/// </summary>
internal sealed class StoreHttpClients : HttpClientFactory
{
    public override HttpClient CreateHttpClient(IClientConfig clientConfig)
    {
        var sockets = new SocketsHttpHandler
        {
            AllowAutoRedirect = clientConfig.AllowAutoRedirect,
            AutomaticDecompression = DecompressionMethods.None,
        };
        if (clientConfig.GetWebProxy() is { } proxy)
        {
            if (clientConfig.ProxyCredentials is { } credentials)
            {
                proxy.Credentials = credentials;
            }

            sockets.Proxy = proxy;
        }

        if (clientConfig.MaxConnectionsPerServer is { } limit)
        {
            sockets.MaxConnectionsPerServer = limit;
        }

        if (clientConfig.ConnectTimeout is { } connect)
        {
            sockets.ConnectTimeout = connect;
        }

        var client = new HttpClient(new ContinueForLargeBodies(sockets));
        if (clientConfig.Timeout is { } timeout)
        {
            client.Timeout = timeout;
        }

        return client;
    }

    /// <summary>
    /// Drops <c>Expect: 100-continue</c> from requests whose body is under <see cref="Threshold"/>, as curl does: a
    /// store that refuses the request still answers once the few bytes arrived, and the wait for 100 Continue would
    /// cost more than sending them.
    /// </summary>
    internal sealed class ContinueForLargeBodies(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        public const long Threshold = 1 << 20;

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Adjust(request);
            return base.SendAsync(request, cancellationToken);
        }

        protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Adjust(request);
            return base.Send(request, cancellationToken);
        }

        private static void Adjust(HttpRequestMessage request)
        {
            if (request.Headers.ExpectContinue == true && request.Content?.Headers.ContentLength is < Threshold)
            {
                request.Headers.ExpectContinue = false;
            }
        }
    }
}
