using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// What the cache's own requests to the origin need of a client's request, copied before that request ends: the
/// same target, Host, client address and end-to-end fields, sent through the normal forwarding path with no client
/// to answer. A stale-while-revalidate refresh is made conditional on the entry (<see cref="Revalidating"/>); the
/// bytes still missing of a body are asked of the same version (<see cref="ForRest"/>).
/// </summary>
internal sealed class StandInRequest
{
    private readonly string _method;
    private readonly string _rawTarget;
    private readonly KeyValuePair<string, Microsoft.Extensions.Primitives.StringValues>[] _headers;
    private readonly IPAddress? _client;

    private StandInRequest(HttpContext context)
    {
        _method = HttpMethods.IsHead(context.Request.Method) ? HttpMethods.Head : HttpMethods.Get;
        _rawTarget = context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? context.Request.Path.Value ?? "/";
        _headers = [.. context.Request.Headers];
        _client = context.Connection.RemoteIpAddress;
    }

    public static StandInRequest From(HttpContext context) => new(context);

    /// <summary>A request of our own, as the client's would have reached the forwarding path, conditional on <paramref name="entry"/>.</summary>
    public HttpContext Revalidating(CachedResponse entry)
    {
        var context = ToContext(_method, body: null, aborted: default);
        // Conditional on the entry alone: the client's own validators name its copy, not the entry, and a 304 to
        // "If-None-Match: <the new version>" would be taken for the entry's confirmation, the new ETag put on the
        // old bytes. (An entry filled with credentials is never refreshed this way, so no signature covers them.)
        context.Request.Headers.Remove(HeaderNames.IfNoneMatch);
        context.Request.Headers.Remove(HeaderNames.IfModifiedSince);
        ClientConditionals.MakeConditional(context.Request, entry);
        return context;
    }

    /// <summary>
    /// The client's GET for the bytes from <paramref name="from"/> (through <paramref name="to"/>) of the version
    /// <paramref name="etag"/> (a strong one) and no other: <c>Range</c> and <c>If-Match</c> in place of whatever
    /// range and conditions the client sent. The rest of a fill whose client left (<see cref="FillContinuation"/>),
    /// or of a body the cache began to serve and cannot finish (<see cref="OriginRemainder"/>). A request signed with
    /// those fields is refused by its origin, and the answer is then not taken.
    /// </summary>
    /// <param name="to">The last byte wanted; null for the body's end.</param>
    /// <param name="body">Where the answer's body goes; null: nowhere (an observer takes it).</param>
    /// <param name="aborted">Ends the request (the client it answers went away); none for a request no client waits on.</param>
    public HttpContext ForRest(string etag, long from, long? to = null, Stream? body = null, CancellationToken aborted = default)
    {
        var context = ToContext(HttpMethods.Get, body, aborted);
        var headers = context.Request.Headers;
        foreach (var condition in (ReadOnlySpan<string>)[HeaderNames.IfNoneMatch, HeaderNames.IfModifiedSince, HeaderNames.IfUnmodifiedSince, HeaderNames.IfRange])
        {
            headers.Remove(condition);
        }

        headers.Range = "bytes=" + from.ToString(CultureInfo.InvariantCulture) + "-" + to?.ToString(CultureInfo.InvariantCulture);
        headers.IfMatch = etag;
        return context;
    }

    private DefaultHttpContext ToContext(string method, Stream? body, CancellationToken aborted)
    {
        var question = _rawTarget.IndexOf('?', StringComparison.Ordinal);
        var request = new HttpRequestFeature
        {
            Method = method,
            Protocol = "HTTP/1.1",
            Scheme = "http",
            RawTarget = _rawTarget,
            Path = question < 0 ? _rawTarget : _rawTarget[..question],
            QueryString = question < 0 ? "" : _rawTarget[question..],
            Headers = new HeaderDictionary(_headers.ToDictionary(h => h.Key, h => h.Value, StringComparer.OrdinalIgnoreCase)),
        };
        // A request of its own with no body: a body's framing fields of the client's (a GET may carry them) would have
        // the backend wait for bytes that never come.
        request.Headers.Remove(HeaderNames.ContentLength);
        request.Headers.Remove(HeaderNames.TransferEncoding);
        request.Headers.Remove(HeaderNames.Expect);
        var features = new FeatureCollection();
        features.Set<IHttpRequestFeature>(request);
        features.Set<IHttpResponseFeature>(new HttpResponseFeature());
        features.Set<IHttpResponseBodyFeature>(new StreamResponseBodyFeature(body ?? Stream.Null));
        features.Set<IHttpRequestBodyDetectionFeature>(NoBody.Instance);
        features.Set<IHttpConnectionFeature>(new HttpConnectionFeature { RemoteIpAddress = _client });
        features.Set<IHttpRequestLifetimeFeature>(new HttpRequestLifetimeFeature { RequestAborted = aborted });
        return new DefaultHttpContext(features);
    }

    private sealed class NoBody : IHttpRequestBodyDetectionFeature
    {
        public static readonly NoBody Instance = new();

        public bool CanHaveBody => false;
    }
}
