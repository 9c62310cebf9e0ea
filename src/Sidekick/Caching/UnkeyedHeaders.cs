namespace Sidekick.Caching;

/// <summary>
/// Request fields that ask the origin to answer for another scheme, host, port, path or method than the request line
/// and Host name, and that reach the origin as the client sent them. An entry is named by Host and target alone
/// (<see cref="CacheKey"/>), so an origin that builds links or redirects from <c>X-Forwarded-Proto</c>, or routes by
/// <c>X-Original-URL</c> or <c>X-HTTP-Method-Override</c> (frameworks behind proxies do), would have one client's
/// choice stored under the name every other client asks for: web cache poisoning through unkeyed input. A request
/// carrying one of them neither reads the cache nor fills it. Clients of a sidecar (S3 SDKs, Spark, awscli, rclone)
/// send none of them.
/// </summary>
internal static class UnkeyedHeaders
{
    // The fields the common web frameworks and proxies honour for scheme, host, port, path prefix and method.
    // X-Forwarded-For and X-Real-IP are not among them: sidekick sets both itself.
    private static readonly string[] Names =
    [
        "Forwarded",
        "X-Forwarded-Proto",
        "X-Forwarded-Scheme",
        "X-Forwarded-Ssl",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "X-Forwarded-Uri",
        "X-Forwarded-Server",
        "X-Host",
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ];

    /// <summary>
    /// The first such field the request carries, or null. X-Forwarded-Host counts only on a request without Host (or
    /// with an empty one, HTTP/1.0): with one, sidekick sets it to that Host itself, as
    /// <see cref="Forwarding.ForwardingHeaders.IsCopied"/> decides.
    /// </summary>
    public static string? FoundIn(IHeaderDictionary headers)
    {
        foreach (var name in Names)
        {
            if (headers.ContainsKey(name))
            {
                return name;
            }
        }

        return headers.Host.ToString().Length == 0 && headers.ContainsKey(Forwarding.ForwardingHeaders.ForwardedHost) ? Forwarding.ForwardingHeaders.ForwardedHost : null;
    }
}
