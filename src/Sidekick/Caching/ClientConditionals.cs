using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// Turns the client's request into the cache's conditional request to the origin and back. Only a field is
/// added (the entry's validator): nothing of the client's request is removed or changed, since SigV4 signs the
/// headers it names (Range among them) and a request that differs from what was signed is refused. The origin
/// evaluates If-None-Match before Range (RFC 9110 §13.2.2), so a 304 confirms the entry whatever the range.
/// </summary>
internal readonly struct ClientConditionals
{
    /// <summary>The request fields that make a request conditional or partial.</summary>
    public static readonly string[] Names =
        [HeaderNames.IfNoneMatch, HeaderNames.IfModifiedSince, HeaderNames.IfMatch, HeaderNames.IfUnmodifiedSince, HeaderNames.IfRange, HeaderNames.Range];

    /// <summary>
    /// The client's own validators of a copy it holds: with one of these, its request is not made conditional on the
    /// entry. If-Match and If-Unmodified-Since are not among them: SDKs send If-Match on every ranged read to pin one
    /// version, and the origin evaluates them before an added If-None-Match (RFC 9110 §13.2.2), so a 304 still
    /// means both that the client's precondition holds and that the entry is current.
    /// </summary>
    private static readonly string[] Validators = [HeaderNames.IfNoneMatch, HeaderNames.IfModifiedSince];

    private readonly string[] _added;

    private ClientConditionals(params string[] added) => _added = added;

    public static bool AnyIn(HttpRequest request) => Names.Any(request.Headers.ContainsKey);

    public static bool HasOwnValidators(HttpRequest request) => Validators.Any(request.Headers.ContainsKey);

    /// <summary>
    /// Adds the entry's validators to a request that has none of its own: its ETag (If-None-Match) and, for a
    /// request of the whole body, its Last-Modified as well (If-Modified-Since, RFC 9111 §4.3.1: an origin that
    /// does not do entity tags still answers 304; one that does ignores the date, RFC 9110 §13.1.3). An entry with
    /// neither is asked for unconditionally, and the new response replaces it.
    /// </summary>
    public static ClientConditionals MakeConditional(HttpRequest request, CachedResponse entry)
    {
        var etag = entry.ETag;
        var lastModified = request.Headers.ContainsKey(HeaderNames.Range) && etag is not null ? null : entry.Header(HeaderNames.LastModified);
        if (etag is not null)
        {
            request.Headers.IfNoneMatch = etag;
        }

        if (lastModified is not null)
        {
            request.Headers.IfModifiedSince = lastModified;
        }

        return (etag, lastModified) switch
        {
            (not null, not null) => new ClientConditionals(HeaderNames.IfNoneMatch, HeaderNames.IfModifiedSince),
            (not null, null) => new ClientConditionals(HeaderNames.IfNoneMatch),
            (null, not null) => new ClientConditionals(HeaderNames.IfModifiedSince),
            _ => new ClientConditionals(),
        };
    }

    /// <summary>Takes the added validators away again, so the entry is served against the client's own request.</summary>
    public void Restore(HttpRequest request)
    {
        foreach (var name in _added ?? [])
        {
            request.Headers.Remove(name);
        }
    }
}
