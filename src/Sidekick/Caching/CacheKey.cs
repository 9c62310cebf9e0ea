using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Caching;

/// <summary>
/// Names entries in the bucket. The key is the SHA-256 of the Host and the request target with its query parameters
/// sorted by name, so that two requests name one entry only when the origin cannot tell them apart:
/// <list type="bullet">
/// <item>The sort is by name alone and stable: a repeated name keeps the order of its values, which many servers
/// read as "the first (or the last) wins"; sorted whole, <c>?v=a&amp;v=b</c> and <c>?v=b&amp;v=a</c> shared an entry, and one
/// client chose what the other was served. A name counts as repeated in any spelling an origin may decode to the
/// same name: percent-encoded (<c>%76</c> is <c>v</c>), <c>+</c> for a space, in another case (ASP.NET's query
/// matches names so); sorted by the name as written, <c>?v=evil&amp;%76=good</c> and <c>?%76=good&amp;v=evil</c> shared
/// an entry the same way.</item>
/// <item>A presigned URL's signing parameters are left out, so presigned URLs for one object share its entry (the
/// origin confirms it for each requester: such an entry is served only after the requester's own 304). Only when the
/// query carries a credential, though: without one, a parameter that merely has such a name (an <c>Expires</c> on a
/// service that is not S3) is part of what is asked.</item>
/// </list>
/// Names are flat (S3 needs no directory sharding, and a flat name keeps server-side copies simple on every S3
/// implementation), inside the sidecar's folder of the bucket (<see cref="CacheNamespace"/>). A response with Vary
/// is stored as <c>abcd….v.&lt;hash of the selected request headers&gt;</c> next to a marker at the plain key naming
/// the Vary headers.
/// </summary>
internal static class CacheKey
{
    public static string For(HttpContext context, bool withQuery = true) =>
        For(context.Request.Host.Value, context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? context.Request.Path.Value ?? "/", withQuery);

    /// <summary>The key of <paramref name="target"/> (origin-form: path and query) on <paramref name="host"/>.</summary>
    public static string For(string? host, string target, bool withQuery = true)
    {
        var question = target.IndexOf('?', StringComparison.Ordinal);
        var path = question < 0 ? target : target[..question];
        var text = new StringBuilder();
        text.Append(host?.ToLowerInvariant()).Append(path);
        if (withQuery && question >= 0)
        {
            var parameters = target[(question + 1)..].Split('&', StringSplitOptions.RemoveEmptyEntries);
            var presigned = parameters.Any(p => CachePolicy.IsCredentialParameter(DecodedName(p)));
            var kept = parameters
                .Where(p => !presigned || !CachePolicy.IsPresignParameter(DecodedName(p)))
                .OrderBy(DecodedName, StringComparer.OrdinalIgnoreCase) // stable: a repeated name keeps its values' order
                .ToArray();
            if (kept.Length > 0)
            {
                text.Append('?').Append(string.Join('&', kept));
            }
        }

        return Hash(text.ToString());
    }

    private static string RawName(string parameter)
    {
        var equals = parameter.IndexOf('=', StringComparison.Ordinal);
        return equals < 0 ? parameter : parameter[..equals];
    }

    /// <summary>The name as a form-decoding origin reads it: '+' is a space, then percent-decoded.</summary>
    private static string DecodedName(string parameter) => Uri.UnescapeDataString(RawName(parameter).Replace('+', ' '));

    // A variant must not sit "under" its marker: stores with a file-system layout (MinIO, s3rver) refuse an
    // object whose name is a prefix directory of another.
    public static string Variant(string key, IReadOnlyList<string> values) =>
        VariantPrefix(key) + Hash(string.Join('\n', values))[..32];

    public static string VariantPrefix(string key) => key + ".v.";

    private static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
