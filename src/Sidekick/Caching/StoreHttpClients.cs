using System.Net;
using Amazon.Runtime;

namespace Sidekick.Caching;

/// <summary>
/// The HTTP clients the AWS SDK talks to the store through: the SDK's own settings (no redirects followed, no
/// decompression, its proxy, timeout and connection limit), with <c>Expect: 100-continue</c> kept for large bodies
/// only (<see cref="ContinueForLargeBodies"/>), and an object that is not there answered without an exception
/// (<see cref="AbsentAsAnswer"/>), and no answer the SDK reads whole read past a bound (<see cref="BoundedAnswers"/>).
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
        else
        {
            // The environment's proxy, but never for a store on loopback (as the backends' and Go's).
            sockets.Proxy = Forwarding.LoopbackBypassProxy.FromEnvironment();
        }

        if (clientConfig.MaxConnectionsPerServer is { } limit)
        {
            sockets.MaxConnectionsPerServer = limit;
        }

        if (clientConfig.ConnectTimeout is { } connect)
        {
            sockets.ConnectTimeout = connect;
        }

        var client = new HttpClient(new AbsentAsAnswer(new BoundedAnswers(new ContinueForLargeBodies(sockets))));
        if (clientConfig.Timeout is { } timeout)
        {
            client.Timeout = timeout;
        }

        return client;
    }

    /// <summary>
    /// Turns the store's 404 to a HEAD into a bodiless 200 that carries <see cref="AbsentMetadata"/> with this
    /// process's <see cref="AbsentMark"/>, which <see cref="S3CacheStore"/> reads as "no such object". Every miss asks
    /// the store for an object that is not there (its lookup and, on stores that ignore <c>If-None-Match</c>, its lease
    /// read), and the SDK answers a 404 by throwing through some fifteen async handlers, its telemetry formatting the
    /// stack trace on the way: measured with perf on the Native AOT build, ~1.5 ms more than a plain HEAD per 404 and
    /// ~7 % of the process's CPU on a stream of small misses (bench/cache-results.md). No stored object can carry the
    /// mark: it is drawn at random when the process starts.
    /// </summary>
    internal sealed class AbsentAsAnswer(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        public const string AbsentMetadata = "x-amz-meta-sidekick-absent";

        public static string AbsentMark { get; } = Guid.NewGuid().ToString("N");

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Translate(request, await base.SendAsync(request, cancellationToken));

        protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Translate(request, base.Send(request, cancellationToken));

        private static HttpResponseMessage Translate(HttpRequestMessage request, HttpResponseMessage response)
        {
            if (response.StatusCode != HttpStatusCode.NotFound || request.Method != HttpMethod.Head)
            {
                return response;
            }

            var absent = new HttpResponseMessage(HttpStatusCode.OK) { RequestMessage = request, Version = response.Version, Content = new ByteArrayContent([]) };
            absent.Headers.TryAddWithoutValidation(AbsentMetadata, AbsentMark);
            response.Dispose();
            return absent;
        }
    }

    /// <summary>
    /// Bounds the bodies a store's answer may make sidekick read (<see cref="BoundedStoreAnswer"/>): an error's to
    /// <see cref="MaxErrorBytes"/> (S3's are a few hundred bytes of XML), any other answer's but an object's to
    /// <see cref="MaxAnswerBytes"/> (a listing page of 1,000 keys of up to 1 KiB each, XML-escaped, stays well under).
    /// An object read (a GET without a query: sidekick's own reads, <see cref="StoreRequests"/>, and so every HIT's
    /// body) that succeeded is left as it came: no wrapper, no extra copy, no allocation. Nor is an answer whose
    /// declared length is within its bound: the connection's framing already holds it to that length.
    /// </summary>
    internal sealed class BoundedAnswers(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        public const long MaxErrorBytes = 64 * 1024;

        public const long MaxAnswerBytes = 8 * 1024 * 1024;

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Bound(request, await base.SendAsync(request, cancellationToken));

        protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Bound(request, base.Send(request, cancellationToken));

        private static HttpResponseMessage Bound(HttpRequestMessage request, HttpResponseMessage response)
        {
            var success = response.IsSuccessStatusCode;
            if (success && request.Method == HttpMethod.Get && string.IsNullOrEmpty(request.RequestUri?.Query))
            {
                return response;
            }

            var cap = success ? MaxAnswerBytes : MaxErrorBytes;
            if (response.Content.Headers.ContentLength <= cap)
            {
                return response;
            }

            response.Content = new BoundedStoreAnswer(response.Content, cap, response.StatusCode);
            return response;
        }
    }

    /// <summary>
    /// Drops <c>Expect: 100-continue</c> from requests whose body is under <see cref="Threshold"/>, as curl does. The
    /// SDK asks for it on every PUT, so each lease write (an empty object, on a miss's way to its first byte) and each
    /// small entry would wait a round trip for the store's 100 Continue; a store that refuses the request still
    /// answers once the few bytes arrived.
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
