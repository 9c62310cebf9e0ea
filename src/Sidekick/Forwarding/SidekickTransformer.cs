using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;
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

        RemoveConnectionNamed(request.Headers.Connection, proxyRequest.Headers, proxyRequest.Content?.Headers);
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
                foreach (var value in connection)
                {
                    foreach (var token in value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
                    {
                        if (!token.Equals("close", StringComparison.OrdinalIgnoreCase) &&
                            !token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase))
                        {
                            headers.Remove(token);
                        }
                    }
                }
            }

            headers["X-Proxy"] = "true";
        }

        return proceed;
    }

    private static void RemoveConnectionNamed(
        StringValues connection, System.Net.Http.Headers.HttpHeaders headers, System.Net.Http.Headers.HttpHeaders? contentHeaders)
    {
        foreach (var value in connection)
        {
            if (value is null)
            {
                continue;
            }

            foreach (var token in value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                // Upgrade and keep-alive handling belongs to the forwarder; other named headers are hop-by-hop.
                if (token.Equals("upgrade", StringComparison.OrdinalIgnoreCase) ||
                    token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase) ||
                    token.Equals("close", StringComparison.OrdinalIgnoreCase))
                {
                    continue;
                }

                headers.Remove(token);
                contentHeaders?.Remove(token);
            }
        }
    }
}
