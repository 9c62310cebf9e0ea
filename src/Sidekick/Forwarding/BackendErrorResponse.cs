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
    public static Task WriteAsync(HttpContext context, string message, bool timedOut = false)
    {
        var response = context.Response;
        response.StatusCode = timedOut ? StatusCodes.Status504GatewayTimeout : StatusCodes.Status502BadGateway;
        response.Headers.RetryAfter = "120";
        response.Headers.ContentType = "application/xml";
        response.Headers.Server = "SideKick";
        var body = Encoding.UTF8.GetBytes(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>BackendDown</Code><Message>The remote server returned an error (" +
            SecurityElement.Escape(message) + ")</Message><Resource>" + SecurityElement.Escape(context.Request.Path.Value ?? "/") +
            "</Resource></Error>");
        response.ContentLength = body.Length;
        return HttpMethods.IsHead(context.Request.Method) ? Task.CompletedTask : response.Body.WriteAsync(body).AsTask();
    }
}
