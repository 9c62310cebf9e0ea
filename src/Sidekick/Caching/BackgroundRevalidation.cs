using System.Net;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// What a stale-while-revalidate refresh needs of the client's request, copied before that request ends, and
/// the stand-in request it becomes: the same target, Host, client address and end-to-end fields, made
/// conditional on the entry, sent through the normal forwarding path with no client to answer.
/// </summary>
internal sealed class BackgroundRevalidation
{
    private readonly string _method;
    private readonly string _rawTarget;
    private readonly KeyValuePair<string, Microsoft.Extensions.Primitives.StringValues>[] _headers;
    private readonly IPAddress? _client;

    private BackgroundRevalidation(HttpContext context)
    {
        _method = HttpMethods.IsHead(context.Request.Method) ? HttpMethods.Head : HttpMethods.Get;
        _rawTarget = context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? context.Request.Path.Value ?? "/";
        _headers = [.. context.Request.Headers];
        _client = context.Connection.RemoteIpAddress;
    }

    public static BackgroundRevalidation From(HttpContext context) => new(context);

    /// <summary>A request of our own, as the client's would have reached the forwarding path, conditional on <paramref name="entry"/>.</summary>
    public HttpContext ToContext(CachedResponse entry)
    {
        var question = _rawTarget.IndexOf('?', StringComparison.Ordinal);
        var request = new HttpRequestFeature
        {
            Method = _method,
            Protocol = "HTTP/1.1",
            Scheme = "http",
            RawTarget = _rawTarget,
            Path = question < 0 ? _rawTarget : _rawTarget[..question],
            QueryString = question < 0 ? "" : _rawTarget[question..],
            Headers = new HeaderDictionary(_headers.ToDictionary(h => h.Key, h => h.Value, StringComparer.OrdinalIgnoreCase)),
        };
        var features = new FeatureCollection();
        features.Set<IHttpRequestFeature>(request);
        features.Set<IHttpResponseFeature>(new HttpResponseFeature());
        features.Set<IHttpResponseBodyFeature>(new StreamResponseBodyFeature(Stream.Null));
        features.Set<IHttpRequestBodyDetectionFeature>(NoBody.Instance);
        features.Set<IHttpConnectionFeature>(new HttpConnectionFeature { RemoteIpAddress = _client });
        features.Set<IHttpRequestLifetimeFeature>(new HttpRequestLifetimeFeature());
        var context = new DefaultHttpContext(features);
        // Conditional on the entry alone: the client's own validators name its copy, not the entry, and a 304 to
        // "If-None-Match: <the new version>" would be taken for the entry's confirmation, the new ETag put on the
        // old bytes. (An entry filled with credentials is never refreshed this way, so no signature covers them.)
        context.Request.Headers.Remove(HeaderNames.IfNoneMatch);
        context.Request.Headers.Remove(HeaderNames.IfModifiedSince);
        ClientConditionals.MakeConditional(context.Request, entry);
        return context;
    }

    private sealed class NoBody : IHttpRequestBodyDetectionFeature
    {
        public static readonly NoBody Instance = new();

        public bool CanHaveBody => false;
    }
}
