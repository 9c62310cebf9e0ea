using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// Turns the client's request into the cache's conditional request to the origin and back: the client's own
/// validators and Range are set aside (the answer to them comes from the entry once the origin confirmed it)
/// and the entry's validator is sent instead; <see cref="Restore"/> puts the client's fields back.
/// </summary>
internal readonly struct ClientConditionals
{
    /// <summary>The request fields that make a request conditional or partial.</summary>
    public static readonly string[] Names =
        [HeaderNames.IfNoneMatch, HeaderNames.IfModifiedSince, HeaderNames.IfMatch, HeaderNames.IfUnmodifiedSince, HeaderNames.IfRange, HeaderNames.Range];

    private readonly StringValues[] _saved;

    private ClientConditionals(StringValues[] saved) => _saved = saved;

    public static bool AnyIn(HttpRequest request) => Names.Any(request.Headers.ContainsKey);

    /// <summary>
    /// Sets the client's fields aside and asks with the entry's validator (ETag first, else Last-Modified); an
    /// entry with neither is asked for unconditionally, and the new response replaces it.
    /// </summary>
    public static ClientConditionals MakeConditional(HttpRequest request, CachedResponse entry)
    {
        var saved = new StringValues[Names.Length];
        for (var i = 0; i < Names.Length; i++)
        {
            saved[i] = request.Headers[Names[i]];
            request.Headers.Remove(Names[i]);
        }

        if (entry.ETag is { } etag)
        {
            request.Headers.IfNoneMatch = etag;
        }
        else if (entry.Header(HeaderNames.LastModified) is { } lastModified)
        {
            request.Headers.IfModifiedSince = lastModified;
        }

        return new ClientConditionals(saved);
    }

    public void Restore(HttpRequest request)
    {
        for (var i = 0; i < Names.Length; i++)
        {
            request.Headers.Remove(Names[i]);
            if (_saved[i].Count > 0)
            {
                request.Headers[Names[i]] = _saved[i];
            }
        }
    }
}
