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

    private readonly string? _added;

    private ClientConditionals(string? added) => _added = added;

    public static bool AnyIn(HttpRequest request) => Names.Any(request.Headers.ContainsKey);

    public static bool HasOwnValidators(HttpRequest request) => Validators.Any(request.Headers.ContainsKey);

    /// <summary>
    /// Adds the entry's validator to a request that has none of its own: its ETag (If-None-Match), else its
    /// Last-Modified (If-Modified-Since). Not both, though RFC 9111 §4.3.1 says a cache SHOULD send the date beside the
    /// tag for a request of the whole body: an origin must then ignore the date (RFC 9110 §13.1.3), but one that
    /// evaluates it as well (MinIO's precondition checks take each field on its own) answers 304 for an object
    /// overwritten within the second of the stored Last-Modified, and the entry's old bytes would be served as current.
    /// An entry with neither is asked for unconditionally, and the new response replaces it.
    /// </summary>
    public static ClientConditionals MakeConditional(HttpRequest request, CachedResponse entry)
    {
        if (entry.ETag is { } etag)
        {
            request.Headers.IfNoneMatch = etag;
            return new ClientConditionals(HeaderNames.IfNoneMatch);
        }

        if (entry.Header(HeaderNames.LastModified) is { } lastModified)
        {
            request.Headers.IfModifiedSince = lastModified;
            return new ClientConditionals(HeaderNames.IfModifiedSince);
        }

        return new ClientConditionals(null);
    }

    /// <summary>Takes the added validator away again, so the entry is served against the client's own request.</summary>
    public void Restore(HttpRequest request)
    {
        if (_added is not null)
        {
            request.Headers.Remove(_added);
        }
    }
}
