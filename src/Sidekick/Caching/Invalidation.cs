using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// The other URIs an unsafe request's answer invalidates (RFC 9111 §4.4): those in its Location and
/// Content-Location fields, resolved against the request's URI, when they are on the same origin. URIs on
/// another host are left alone, so a response cannot be used to evict someone else's entries.
/// </summary>
internal static class Invalidation
{
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

        foreach (var name in new[] { HeaderNames.Location, HeaderNames.ContentLocation })
        {
            foreach (var value in context.Response.Headers[name])
            {
                if (string.IsNullOrWhiteSpace(value) || !Uri.TryCreate(requestUri, value.Trim(), out var related) ||
                    !SameOrigin(related, requestUri))
                {
                    continue;
                }

                yield return CacheKey.For(host, related.PathAndQuery);
                yield return CacheKey.For(host, related.PathAndQuery, withQuery: false);
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
