using System.Collections.Frozen;
using Sidekick.Forwarding;

namespace Sidekick.Caching;

/// <summary>
/// Request fields that keep a GET or HEAD out of the cache (neither read nor filled), found in one pass over the
/// request's fields. Clients of a sidecar (S3 SDKs, Spark, awscli, rclone) send the first kind never and the second
/// only for objects encrypted with their own key.
/// <list type="bullet">
/// <item>Unkeyed: fields that ask the origin for another scheme, host, port, path or method than the request line and
/// Host say, and reach it as the client sent them. An entry is named by Host and target alone (<see cref="CacheKey"/>),
/// so an origin that builds links or redirects from <c>X-Forwarded-Proto</c>, or routes by <c>X-Original-URL</c> or
/// <c>X-HTTP-Method-Override</c> (frameworks behind proxies do), would have one client's choice stored under the name
/// every other client asks for: web cache poisoning through unkeyed input.</item>
/// <item>Named in Connection: a field the client marks hop-by-hop is dropped before the origin, yet would choose the
/// entry (its Vary variant).</item>
/// <item>SSE-C: the origin decrypts with the key the request carries (S3 and MinIO take it in these fields, never in the
/// query, presigned URLs included). An entry would keep the plaintext in the cache's bucket, which the customer's key
/// exists to prevent, and the key would no longer guard it.</item>
/// </list>
/// </summary>
internal static class BypassingFields
{
    // The fields the common web frameworks and proxies honour for scheme, host, port, path prefix and method.
    // X-Forwarded-For and X-Real-IP are not among them: sidekick sets both itself, and X-Forwarded-Host too when the
    // request has a Host.
    private static readonly FrozenSet<string> Unkeyed = FrozenSet.Create(StringComparer.OrdinalIgnoreCase,
        "Forwarded", "X-Forwarded-Proto", "X-Forwarded-Scheme", "X-Forwarded-Ssl", "X-Forwarded-Port", "X-Forwarded-Prefix",
        "X-Forwarded-Uri", "X-Forwarded-Server", "X-Host", "X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override",
        "X-HTTP-Method", "X-Method-Override", "X-Forwarded-Path", "X-Original-Host", "X-Forwarded-Protocol",
        "X-Forwarded-Https", "X-Url-Scheme", "Front-End-Https");

    private static readonly FrozenSet<string> CustomerKey = FrozenSet.Create(StringComparer.OrdinalIgnoreCase,
        "X-Amz-Server-Side-Encryption-Customer-Key", "X-Amz-Server-Side-Encryption-Customer-Algorithm",
        "X-Amz-Server-Side-Encryption-Customer-Key-MD5");

    /// <summary>
    /// Why the first such field the request carries keeps it out of the cache, and a line naming it; null for none.
    /// X-Forwarded-Host counts only on a request without Host (or with an empty one, HTTP/1.0), as
    /// <see cref="ForwardingHeaders.IsCopied"/> decides.
    /// </summary>
    public static (NotStoredReason Reason, string Detail)? Find(IHeaderDictionary headers)
    {
        var hostSent = headers.Host.ToString().Length > 0;
        foreach (var (name, _) in headers)
        {
            if (CustomerKey.Contains(name))
            {
                return (NotStoredReason.CustomerKey,
                    $"the request carries an SSE-C key ({name}): the object is encrypted with the customer's key, and the cache never keeps its plaintext");
            }

            // Fields the client's Connection names are dropped on the way to the origin (hop-by-hop), but an entry's
            // variant (Vary) and the checks above read the request as the client sent it: the origin's answer to a
            // request without them would be stored as the answer to a request with them.
            if (name.Equals("Connection", StringComparison.OrdinalIgnoreCase) && HopByHopHeaders.NamedIn(headers.Connection) is [var named, ..])
            {
                return (NotStoredReason.UnkeyedHeader,
                    $"the request's Connection names {named}, which does not reach the origin while the entry would be chosen by it; such a request neither reads nor fills the cache");
            }

            // CGI, PHP and WSGI turn '-' and '_' alike into '_' (HTTP_X_FORWARDED_HOST): X_Forwarded_Host reaches such an
            // origin as X-Forwarded-Host would, and sidekick replaces only the latter with its own value.
            var underscored = name.Contains('_');
            var spelled = underscored ? name.Replace('_', '-') : name;
            if (Unkeyed.Contains(spelled) ||
                ((!hostSent || underscored) && spelled.Equals(ForwardingHeaders.ForwardedHost, StringComparison.OrdinalIgnoreCase)))
            {
                return (NotStoredReason.UnkeyedHeader,
                    $"the request carries {name}, which can change the origin's answer and is not part of an entry's name; such a request neither reads nor fills the cache");
            }
        }

        return null;
    }
}
