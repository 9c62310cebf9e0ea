using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Forwarding;

/// <summary>
/// Refuses requests a backend could read differently from us (request smuggling): both Content-Length and
/// Transfer-Encoding, or a target that is neither origin-form nor an absolute URI naming the request's own Host.
/// Kestrel already rejects the rest (obs-fold, bad bytes, duplicate Content-Length, oversized headers, an
/// absolute-form target whose authority differs from Host).
/// </summary>
internal static class RequestGuard
{
    /// <summary>
    /// The reason to refuse the request, or null. An absolute-form target (<c>GET http://host/key</c>), which a
    /// server must accept (RFC 9112 §3.2.2) and Go's server, so upstream, does, is rewritten to its origin form
    /// (<c>/key</c>): what a backend expects in the request line, what the cache names its entry after, and what a
    /// SigV4 signature covers (the path, never the scheme and host).
    /// </summary>
    public static string? Admit(HttpContext context)
    {
        var headers = context.Request.Headers;
        // Kestrel keeps Transfer-Encoding and renames a conflicting Content-Length to X-Content-Length.
        if (headers.ContainsKey("Transfer-Encoding") &&
            (headers.ContainsKey("Content-Length") || headers.ContainsKey("X-Content-Length")))
        {
            return "both Content-Length and Transfer-Encoding";
        }

        var request = context.Features.Get<IHttpRequestFeature>();
        var target = request?.RawTarget;
        if (target is { Length: > 0 } && target[0] != '/' && target != "*")
        {
            if (OriginFormOf(target, context.Request.Host.Value) is not { } originForm)
            {
                return "request target must be a path, or an http(s) URI naming the Host";
            }

            request!.RawTarget = originForm;
        }

        return null;
    }

    /// <summary>
    /// The path and query of an absolute <c>http</c> or <c>https</c> URI whose authority is <paramref name="host"/>
    /// (no user information), "/" when it has no path; null for anything else.
    /// </summary>
    private static string? OriginFormOf(string target, string? host)
    {
        var schemeEnd = target.StartsWith("http://", StringComparison.OrdinalIgnoreCase) ? 7
            : target.StartsWith("https://", StringComparison.OrdinalIgnoreCase) ? 8
            : -1;
        if (schemeEnd < 0 || string.IsNullOrEmpty(host))
        {
            return null;
        }

        var authorityEnd = target.AsSpan(schemeEnd).IndexOfAny('/', '?');
        authorityEnd = authorityEnd < 0 ? target.Length : schemeEnd + authorityEnd;
        var authority = target.AsSpan(schemeEnd, authorityEnd - schemeEnd);
        if (authority.Contains('@') || !authority.Equals(host, StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        var rest = target[authorityEnd..];
        return rest.Length == 0 ? "/" : rest[0] == '?' ? "/" + rest : rest;
    }

    public static Task RejectAsync(HttpContext context, string violation)
    {
        context.Response.StatusCode = StatusCodes.Status400BadRequest;
        context.Response.Headers.Connection = "close";
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync($"bad request: {violation}\n");
    }
}
