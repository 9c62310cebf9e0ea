using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Forwarding;

/// <summary>
/// Refuses requests a backend could read differently from us (request smuggling): both Content-Length and
/// Transfer-Encoding, or a target that is not origin-form. Kestrel already rejects the rest (obs-fold, bad
/// bytes, duplicate Content-Length, oversized headers).
/// </summary>
internal static class RequestGuard
{
    public static string? FindViolation(HttpContext context)
    {
        var headers = context.Request.Headers;
        // Kestrel keeps Transfer-Encoding and renames a conflicting Content-Length to X-Content-Length.
        if (headers.ContainsKey("Transfer-Encoding") &&
            (headers.ContainsKey("Content-Length") || headers.ContainsKey("X-Content-Length")))
        {
            return "both Content-Length and Transfer-Encoding";
        }

        var target = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (target is { Length: > 0 } && target[0] != '/' && target != "*")
        {
            return "request target must be a path";
        }

        return null;
    }

    public static Task RejectAsync(HttpContext context, string violation)
    {
        context.Response.StatusCode = StatusCodes.Status400BadRequest;
        context.Response.Headers.Connection = "close";
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync($"bad request: {violation}\n");
    }
}
