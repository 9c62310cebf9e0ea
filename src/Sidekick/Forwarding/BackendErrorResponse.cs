using System.Security;
using System.Text;

namespace Sidekick.Forwarding;

/// <summary>
/// The 502 (or 504) answer S3 clients understand: an S3-style XML error with a Retry-After hint. Unlike upstream the
/// content type is really sent and the values are XML-escaped.
/// </summary>
internal static class BackendErrorResponse
{
    public const string AllOffline = "all backend servers are offline";

    /// <param name="timedOut">The backend did not answer in time: 504 Gateway Timeout rather than 502 (RFC 9110 §15.6.5).</param>
    public static Task WriteAsync(HttpContext context, string message, bool timedOut = false) =>
        WriteAsync(context, timedOut ? StatusCodes.Status504GatewayTimeout : StatusCodes.Status502BadGateway, "120",
            "BackendDown", "The remote server returned an error (" + message + ")");

    /// <summary>
    /// sidekick itself is short of sockets (<see cref="Networking.LocalShortage"/>): 503 with S3's SlowDown code, which
    /// the AWS SDKs, rclone and the MinIO clients retry with backoff, and a Retry-After of one second.
    /// </summary>
    public static Task WriteShortageAsync(HttpContext context, string shortage) =>
        WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "1", "SlowDown", "sidekick is " + shortage + "; retry shortly");

    private static Task WriteAsync(HttpContext context, int status, string retryAfter, string code, string message)
    {
        var response = context.Response;
        response.StatusCode = status;
        response.Headers.RetryAfter = retryAfter;
        response.Headers.ContentType = "application/xml";
        response.Headers.Server = "SideKick";
        var body = Encoding.UTF8.GetBytes(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>" + code + "</Code><Message>" + SecurityElement.Escape(message) +
            "</Message><Resource>" + SecurityElement.Escape(context.Request.Path.Value ?? "/") + "</Resource></Error>");
        response.ContentLength = body.Length;
        return HttpMethods.IsHead(context.Request.Method) ? Task.CompletedTask : response.Body.WriteAsync(body).AsTask();
    }
}
