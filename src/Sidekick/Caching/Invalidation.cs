using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// What an unsafe request's non-error answer invalidates (RFC 9111 §4.4):
/// <list type="bullet">
/// <item>its target, and the other URIs in its Location and Content-Location fields, resolved against the request's
/// URI, when they are on the same origin (URIs on another host are left alone, so a response cannot be used to evict
/// someone else's entries; at most <see cref="MaxRelatedUris"/> of them count): the entries under their exact keys are
/// deleted from the bucket, and their loose paths (every spelling, query and Host, <see cref="LoosePath"/>) are
/// remembered;</item>
/// <item>the listings the write changed: the path's first segment (an S3 bucket in path style) and the root (the
/// bucket in virtual-host style), all queries;</item>
/// <item>the objects a DeleteObjects body named (<see cref="DeleteObjects"/>), each inside the request's path;</item>
/// <item>a whole bucket when its access changed (policy, ACL, public access block, ownership), when it was deleted,
/// or when a DeleteObjects body could not be read.</item>
/// </list>
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

    /// <summary>
    /// The query parameters of a bucket-level write that changes who may read every object in it (S3's sub-resources).
    /// An object's entry is served without asking the origin for as long as it is fresh, so a bucket made private must
    /// not leave them so.
    /// </summary>
    private static readonly string[] AccessSettings = ["policy", "acl", "publicAccessBlock", "ownershipControls"];

    /// <summary>What <paramref name="context"/>'s answer invalidates; <paramref name="deletes"/> is its DeleteObjects body, if it is one.</summary>
    public static WriteInvalidation Of(HttpContext context, DeleteObjects? deletes)
    {
        var request = context.Request;
        var target = LoosePath.Of(request);
        var keys = Keys(context);
        var paths = new HashSet<string>(StringComparer.Ordinal) { target, LoosePath.FirstSegment(target), LoosePath.Root };
        foreach (var uri in RelatedUris(context))
        {
            paths.Add(LoosePath.Of(uri.PathAndQuery));
        }

        IReadOnlyCollection<string> owed = [];
        string? bucket = null;
        var unread = false;
        if (deletes is not null)
        {
            if (deletes.Keys() is { } deleted)
            {
                var host = request.Host.Value;
                var container = LoosePath.RawPath(context).TrimEnd('/');
                var exact = new List<string>(deleted.Count);
                foreach (var key in deleted)
                {
                    paths.Add(LoosePath.Join(target, key));
                    // Spelled as S3 clients encode a key (every octet but the unreserved ones and '/'): the spelling
                    // most readers' entries are under. Other spellings are covered by the loose path, here only.
                    exact.Add(CacheKey.For(host, container + "/" + string.Join('/', key.Split('/').Select(Uri.EscapeDataString)), withQuery: false));
                }

                owed = exact;
            }
            else
            {
                // Not read whole, or not such XML: which objects went is unknown, so every one under the bucket does.
                bucket = LoosePath.FirstSegment(target);
                unread = true;
            }
        }

        if (bucket is null && LoosePath.IsBucketLevel(target) &&
            (HttpMethods.IsDelete(request.Method) || (request.QueryString.HasValue && AccessSettings.Any(request.Query.ContainsKey))))
        {
            bucket = target;
        }

        return new WriteInvalidation(keys, owed, paths, bucket, unread);
    }

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
        var host = context.Request.Host.Value;
        foreach (var uri in RelatedUris(context))
        {
            yield return CacheKey.For(host, uri.PathAndQuery);
            yield return CacheKey.For(host, uri.PathAndQuery, withQuery: false);
        }
    }

    private static IEnumerable<Uri> RelatedUris(HttpContext context)
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
                yield return uri;
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

/// <summary>
/// What one write invalidates: the entries to delete from the bucket (exact keys: those its answer waits for a moment,
/// and those left to the background, a DeleteObjects body's), the loose paths and the bucket (a first segment, or the
/// root for all) this sidecar remembers, and whether that bucket is invalidated because a DeleteObjects body could not
/// be read.
/// </summary>
internal sealed record WriteInvalidation(
    IReadOnlyCollection<string> Keys, IReadOnlyCollection<string> OwedKeys, IReadOnlyCollection<string> Paths, string? Bucket, bool BodyUnread);
