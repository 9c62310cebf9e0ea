using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// The other URIs an unsafe request's answer invalidates (RFC 9111 §4.4): those in its Location and
/// Content-Location fields, resolved against the request's URI, when they are on the same origin. URIs on
/// another host are left alone, so a response cannot be used to evict someone else's entries. At most
/// <see cref="MaxRelatedUris"/> of them count.
/// </summary>
internal static class Invalidation
{
    /// <summary>
    /// The related URIs (Location and Content-Location values on the same origin, together) one answer invalidates:
    /// each costs the store a listing and deletes, awaited inside the client's request, and a backend that sent 500
    /// Content-Location values had 1,002 entries evicted and answered in 3.4 s. §4.4 names one of each field; a few
    /// more covers an answer that repeats them.
    /// </summary>
    public const int MaxRelatedUris = 4;

    /// <summary>The keys an unsafe request's answer invalidates, each once: its target's (with and without query) and the related URIs'.</summary>
    public static IReadOnlyCollection<string> Keys(HttpContext context)
    {
        var keys = new List<string>(2 + 2 * MaxRelatedUris);
        foreach (var key in (IEnumerable<string>)[CacheKey.For(context), CacheKey.For(context, withQuery: false), .. RelatedKeys(context)])
        {
            // Without a query the two keys of a URI are one: evicted once, not twice.
            if (!keys.Contains(key, StringComparer.Ordinal))
            {
                keys.Add(key);
            }
        }

        return keys;
    }

    public static IEnumerable<string> RelatedKeys(HttpContext context)
    {
        var request = context.Request;
        var host = request.Host.Value;
        if (string.IsNullOrEmpty(host) || !Uri.TryCreate($"{request.Scheme}://{host}", UriKind.Absolute, out var origin))
        {
            yield break;
        }

        var target = context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? request.Path.Value ?? "/";
        if (!Uri.TryCreate(origin, target, out var requestUri))
        {
            yield break;
        }

        var related = 0;
        foreach (var name in new[] { HeaderNames.Location, HeaderNames.ContentLocation })
        {
            foreach (var value in context.Response.Headers[name])
            {
                if (related == MaxRelatedUris)
                {
                    yield break;
                }

                if (string.IsNullOrWhiteSpace(value) || !Uri.TryCreate(requestUri, value.Trim(), out var uri) ||
                    !SameOrigin(uri, requestUri))
                {
                    continue;
                }

                related++;
                yield return CacheKey.For(host, uri.PathAndQuery);
                yield return CacheKey.For(host, uri.PathAndQuery, withQuery: false);
            }
        }
    }

    /// <summary>
    /// Same host and port. The scheme is not compared: sidekick's clients reach it over plain HTTP or TLS for
    /// the same backends, and entries are keyed by Host alone.
    /// </summary>
    private static bool SameOrigin(Uri candidate, Uri request) =>
        (candidate.Scheme == Uri.UriSchemeHttp || candidate.Scheme == Uri.UriSchemeHttps) &&
        string.Equals(candidate.Host, request.Host, StringComparison.OrdinalIgnoreCase) &&
        (candidate.Port == request.Port || candidate.IsDefaultPort && request.IsDefaultPort);
}
