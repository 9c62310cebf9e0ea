using Microsoft.AspNetCore.Http.Features;
using Yarp.ReverseProxy.Forwarder;

namespace Sidekick.Forwarding;

/// <summary>
/// Shapes the request to a backend the way S3 clients need it: the client's Host and raw request target
/// reach the backend byte for byte (SigV4 signs both), forwarding headers are added once, and headers
/// named in Connection are dropped both ways.
/// </summary>
internal sealed class SidekickTransformer : HttpTransformer
{
    public static readonly SidekickTransformer Instance = new();

    /// <summary>The names .NET keeps on HttpContent rather than on the request (its content header descriptors).</summary>
    private static readonly HashSet<string> ContentHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        "Allow", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Location",
        "Content-MD5", "Content-Range", "Content-Type", "Expires", "Last-Modified",
    };

    private static readonly UriCreationOptions RawUri = new() { DangerousDisablePathAndQueryCanonicalization = true };

    public override async ValueTask TransformRequestAsync(
        HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix, CancellationToken cancellationToken)
    {
        await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken);

        var request = httpContext.Request;
        var rawTarget = httpContext.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (rawTarget is { Length: > 0 } && rawTarget[0] == '/')
        {
            // Keep %2F, %2B, ';' and the query exactly as the client sent them.
            proxyRequest.RequestUri = new Uri(destinationPrefix + rawTarget, in RawUri);
        }

        var host = request.Headers.Host.ToString();
        proxyRequest.Headers.Host = host;

        var ip = ClientAddress.For(httpContext.Connection.RemoteIpAddress);
        var prior = request.Headers["X-Forwarded-For"];
        proxyRequest.Headers.Remove("X-Forwarded-For");
        proxyRequest.Headers.TryAddWithoutValidation("X-Forwarded-For", prior.Count == 0 ? ip : $"{prior}, {ip}");
        proxyRequest.Headers.Remove("X-Real-IP");
        proxyRequest.Headers.TryAddWithoutValidation("X-Real-IP", ip);
        if (host.Length > 0)
        {
            proxyRequest.Headers.Remove("X-Forwarded-Host");
            proxyRequest.Headers.TryAddWithoutValidation("X-Forwarded-Host", host);
        }

        if (HopByHopHeaders.NamedIn(request.Headers.Connection) is { } named)
        {
            foreach (var name in named)
            {
                // Each collection throws for the other's names ("Misused header name"): ask the right one.
                if (ContentHeaders.Contains(name))
                {
                    proxyRequest.Content?.Headers.Remove(name);
                }
                else
                {
                    proxyRequest.Headers.Remove(name);
                }
            }
        }
    }

    public override async ValueTask<bool> TransformResponseAsync(
        HttpContext httpContext, HttpResponseMessage? proxyResponse, CancellationToken cancellationToken)
    {
        var proceed = await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken);
        if (proxyResponse is not null)
        {
            var headers = httpContext.Response.Headers;
            if (proxyResponse.Headers.TryGetValues("Connection", out var connection))
            {
                List<string>? named = null;
                foreach (var value in connection)
                {
                    HopByHopHeaders.AddNamed(value, ref named);
                }

                foreach (var name in named ?? [])
                {
                    headers.Remove(name);
                }
            }

            headers["X-Proxy"] = "true";
            if (proceed && httpContext.Features.Get<IExchangeObserver>() is { } observer)
            {
                // False: YARP copies no body and sends nothing; the observer answers the client.
                proceed = observer.OnResponseHead(httpContext);
            }
        }

        return proceed;
    }
}
