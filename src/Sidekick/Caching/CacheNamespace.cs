using System.Security.Cryptography;
using System.Text;
using Sidekick.Topology;

namespace Sidekick.Caching;

/// <summary>
/// The folder of the bucket a sidecar keeps its entries in. Entries are named by Host and request target, and the
/// clients of every sidecar usually call it <c>localhost:8080</c>: without a folder per origin, sidecars in front of
/// different clusters (production and staging, two tenants' MinIO) that share a bucket would serve each other's
/// objects. The default is a hash of the backends the command line names, so sidecars started alike (the same
/// backends, in any order, in any site) share their entries and others do not; SIDEKICK_CACHE_NAMESPACE names the
/// folder instead when sidecars reach one origin by different names.
/// </summary>
internal static class CacheNamespace
{
    public const int MaxLength = 64;

    /// <summary>A name S3 and every file-system store take as one path segment, which cannot be "." or "..".</summary>
    public static bool IsValid(string name) =>
        name.Length is > 0 and <= MaxLength && name[0] != '.' &&
        name.All(static c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    /// <summary>
    /// The default folder: 16 hex digits of the SHA-256 of every backend's scheme, host and port, lower-cased, sorted
    /// and without repeats. Paths and health settings do not change what a backend serves, so they are left out; so is
    /// the site a backend belongs to, since sidecars near different sites list the same sites in another order.
    /// </summary>
    public static string Of(IEnumerable<SiteDefinition> sites)
    {
        var origins = sites
            .SelectMany(static site => site.Backends)
            .Select(static backend => backend.Endpoint.GetLeftPart(UriPartial.Authority).ToLowerInvariant())
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join('\n', origins))))[..16];
    }
}
