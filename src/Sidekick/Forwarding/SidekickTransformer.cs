using Microsoft.AspNetCore.Http.Features;
using Yarp.ReverseProxy.Forwarder;

namespace Sidekick.Forwarding;

/// <summary>
/// YARP's side of <see cref="ForwardingHeaders"/>: the client's Host and raw request target reach the backend
/// byte for byte (SigV4 signs both), forwarding headers are added once (a client's own only from a trusted peer,
/// <see cref="TrustedProxies"/>), and headers named in Connection are dropped both ways.
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
        var named = request.Headers.Connection.Count == 0 ? null : HopByHopHeaders.NamedIn(request.Headers.Connection);
        var trusted = TrustedProxies.Current.Trusts(httpContext.Connection.RemoteIpAddress);
        foreach (var (name, _) in request.Headers)
        {
            // YARP copied what its own rules allow; ours (ForwardingHeaders, TrustedProxies) decide, as on the HTTP/1.1
            // path. Content-Length stays: HttpClient frames the body it sends from the content's length.
            if ((!ForwardingHeaders.IsCopied(name, host.Length > 0, named) && !name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase)) ||
                (!trusted && TrustedProxies.IsClaim(name)))
            {
                Remove(proxyRequest, name);
            }
        }

        proxyRequest.Headers.Host = host;
        var ip = ClientAddress.For(httpContext.Connection.RemoteIpAddress);
        var prior = trusted ? request.Headers[ForwardingHeaders.ForwardedFor] : default;
        proxyRequest.Headers.TryAddWithoutValidation(ForwardingHeaders.ForwardedFor, ForwardingHeaders.ForwardedForValue(prior, ip));
        proxyRequest.Headers.TryAddWithoutValidation(ForwardingHeaders.RealIp, ip);
        if (host.Length > 0)
        {
            proxyRequest.Headers.TryAddWithoutValidation(ForwardingHeaders.ForwardedHost, host);
        }
    }

    /// <summary>Removes a field YARP copied; each collection throws for the other's names ("Misused header name").</summary>
    private static void Remove(HttpRequestMessage proxyRequest, string name)
    {
        if (ContentHeaders.Contains(name))
        {
            proxyRequest.Content?.Headers.Remove(name);
        }
        else if (name.Length > 0 && name[0] != ':')
        {
            proxyRequest.Headers.Remove(name);
        }
    }

    public override async ValueTask<bool> TransformResponseAsync(
        HttpContext httpContext, HttpResponseMessage? proxyResponse, CancellationToken cancellationToken)
    {
        if (proxyResponse is not null)
        {
            if ((int)proxyResponse.StatusCode is >= 200 and < 300 && HttpMethods.IsConnect(httpContext.Request.Method) &&
                httpContext.Features.Get<IHttpExtendedConnectFeature>() is { IsExtendedConnect: true })
            {
                // Thrown before a field or a byte reaches the client: YARP answers it as a broken response head (a 502,
                // nothing sent yet), so the client, the trace and the statistics all see that 502. Relayed, the body's
                // first write failed in Kestrel and left the response unwritable: the client got a bare 500.
                throw new UnswitchedUpgradeException((int)proxyResponse.StatusCode);
            }

            // Before YARP copies them: Kestrel checks each value as it is set (Latin1Fields).
            foreach (var (name, values) in proxyResponse.Headers.NonValidated)
            {
                foreach (var value in values)
                {
                    Latin1Fields.AllowFor(name, value);
                }
            }

            foreach (var (name, values) in proxyResponse.Content.Headers.NonValidated)
            {
                foreach (var value in values)
                {
                    Latin1Fields.AllowFor(name, value);
                }
            }
        }

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

            if (httpContext.Response.StatusCode is StatusCodes.Status204NoContent)
            {
                // A 204 has no content and no Content-Length (RFC 9110 §8.6); some servers send "Content-Length: 0" or
                // more anyway. Kestrel refuses to write a 204 with one (a 500, and for a HEAD no answer at all), the
                // HTTP/1.1 path drops it: so does this one.
                headers.ContentLength = null;
            }

            headers[ForwardingHeaders.ProxyMarkerName] = ForwardingHeaders.ProxyMarker;
            if (proceed && httpContext.Features.Get<IExchangeObserver>() is { } observer)
            {
                // False: YARP copies no body and sends nothing; the observer answers the client.
                proceed = observer.OnResponseHead(httpContext);
            }
        }

        return proceed;
    }
}
