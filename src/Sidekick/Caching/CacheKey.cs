using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Caching;

/// <summary>
/// Names entries in the bucket. The key is the SHA-256 of the Host and the request target with its query
/// sorted and the presigned-credential parameters removed, so presigned URLs that differ only in their
/// signature share one entry. Names are flat (S3 needs no directory sharding, and a flat name keeps server-side
/// copies simple on every S3 implementation); a response with Vary is stored as
/// <c>abcd….v.&lt;hash of the selected request headers&gt;</c> next to a marker at the plain key naming the Vary headers.
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
            var parameters = target[(question + 1)..]
                .Split('&', StringSplitOptions.RemoveEmptyEntries)
                .Where(p => !CachePolicy.IsCredentialParameter(Uri.UnescapeDataString(p.Split('=')[0])))
                .Order(StringComparer.Ordinal)
                .ToArray();
            if (parameters.Length > 0)
            {
                text.Append('?').Append(string.Join('&', parameters));
            }
        }

        return Hash(text.ToString());
    }

    // A variant must not sit "under" its marker: stores with a file-system layout (MinIO, s3rver) refuse an
    // object whose name is a prefix directory of another.
    public static string Variant(string key, IReadOnlyList<string> values) =>
        VariantPrefix(key) + Hash(string.Join('\n', values))[..32];

    public static string VariantPrefix(string key) => key + ".v.";

    private static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
