using System.Buffers;
using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Forwarding;

/// <summary>
/// Refuses requests a backend could read differently from us (request smuggling): both Content-Length and
/// Transfer-Encoding, a target that is neither origin-form nor an absolute URI naming the request's own Host, and
/// over HTTP/2 or HTTP/3 a field name or value, or a target, that cannot be written on an HTTP/1.1 line as it is; over
/// HTTP/1.x a target holding a control character, which Kestrel lets through. Kestrel already rejects the rest over
/// HTTP/1.1 (obs-fold, CR or LF in a field, duplicate Content-Length, oversized headers, an absolute-form target whose
/// authority differs from Host). A standard method spelled in another case is refused too (see
/// <see cref="IsMisspelledStandardMethod"/>).
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
        if (IsMisspelledStandardMethod(context.Request.Method))
        {
            return "method names are case-sensitive (RFC 9110 §9.1): send " + HttpMethods.GetCanonicalizedValue(context.Request.Method);
        }

        if (HttpMethods.IsConnect(context.Request.Method) &&
            context.Features.Get<IHttpExtendedConnectFeature>() is { IsExtendedConnect: true } extended &&
            !string.Equals(extended.Protocol, "websocket", StringComparison.OrdinalIgnoreCase))
        {
            // An HTTP/2 extended CONNECT (RFC 8441) is forwarded as an HTTP/1.1 upgrade only for WebSockets; any other
            // :protocol failed in the forwarder, a 502 counted against a backend that was never asked.
            return "an extended CONNECT can only open a WebSocket (:protocol websocket)";
        }

        var headers = context.Request.Headers;
        // Kestrel keeps Transfer-Encoding and renames a conflicting Content-Length to X-Content-Length.
        if (headers.ContainsKey("Transfer-Encoding") &&
            (headers.ContainsKey("Content-Length") || headers.ContainsKey("X-Content-Length")))
        {
            return "both Content-Length and Transfer-Encoding";
        }

        if (PortOutOfRange(headers.Host.ToString()))
        {
            return "the Host's port must be at most 65535";
        }

        var request = context.Features.Get<IHttpRequestFeature>();
        var target = request?.RawTarget;
        if (HttpProtocol.IsHttp11(context.Request.Protocol) || HttpProtocol.IsHttp10(context.Request.Protocol))
        {
            if (UnforwardableCoding(context.Request.Protocol, headers) is { } coding)
            {
                return coding;
            }

            // Kestrel takes a bare CR, a TAB, DEL or another control in an HTTP/1.1 target and sidekick writes the
            // target as it came: a backend that ends a line at a bare CR would read what follows it as a field
            // ("GET /a\rTransfer-Encoding: chunked"). RFC 9112 §2.2 asks a recipient to refuse a bare CR. Bytes above
            // 0x7F stay allowed: Go's server (upstream) passes raw UTF-8 object names on, and so does Kestrel.
            if (target is not null && (target.AsSpan().IndexOfAnyInRange('\0', ' ') >= 0 || target.Contains('\u007f')))
            {
                return "request target with a space or a control character";
            }
        }
        else if (UnwritableOnHttp1(headers, target) is { } unwritable)
        {
            return unwritable;
        }

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
    /// Whether the method is a standard one spelled in another case (<c>head</c>, <c>Get</c>). Methods are
    /// case-sensitive (RFC 9110 §9.1), so to a backend <c>head</c> is an unknown method, answered with a body; but
    /// ASP.NET's method checks ignore case, so the HTTP/1.1 forwarder read that answer as a HEAD's, without its body,
    /// and pooled the connection with the body still to come, which the next client's request on it then received as
    /// its answer; the cache took a <c>get</c> for a GET. Kestrel, on the other hand, takes <c>head</c> for a method
    /// of its own and would want a body; no spelling of it can be forwarded that every party reads alike. No client
    /// sends one (S3 and MinIO refuse them too): it is refused.
    /// </summary>
    private static bool IsMisspelledStandardMethod(string method) =>
        !string.Equals(HttpMethods.GetCanonicalizedValue(method), method, StringComparison.Ordinal);

    /// <summary>
    /// A request body's framing sidekick cannot pass on as it came. Kestrel takes any Transfer-Encoding whose last
    /// coding is chunked (<c>gzip, chunked</c>, <c>identity, chunked</c>, chunked twice) and removes the chunking
    /// alone; the field is hop-by-hop and dropped, so the backend stored still-gzipped bytes as the object, told
    /// nothing. Only a single <c>chunked</c> is forwarded (Go's server, so upstream, refuses the rest too). Over
    /// HTTP/1.0 Transfer-Encoding is not defined, and RFC 9112 §6.1 makes its framing faulty: refused, and the
    /// connection closed with the answer, so nothing read after it is taken for a request.
    /// </summary>
    private static string? UnforwardableCoding(string protocol, IHeaderDictionary headers)
    {
        var codings = headers.TransferEncoding;
        if (codings.Count == 0)
        {
            return null;
        }

        if (HttpProtocol.IsHttp10(protocol))
        {
            return "Transfer-Encoding is not defined in HTTP/1.0 (RFC 9112 §6.1): send Content-Length";
        }

        return codings.Count == 1 && string.Equals(codings[0]?.Trim(' ', '\t'), "chunked", StringComparison.OrdinalIgnoreCase)
            ? null
            : $"only 'Transfer-Encoding: chunked' is forwarded, not '{string.Join(", ", codings.ToArray())}'";
    }

    /// <summary>
    /// Kestrel checks that a Host's port is digits, not that it is a port: "h:99999" went to the backend as sent on
    /// one path, and made .NET's client throw on the other (YARP), a 502 counted against the backend.
    /// </summary>
    private static bool PortOutOfRange(string host)
    {
        // A port of up to four characters is in range, whatever it is (most Hosts: none, or h:9000).
        var colon = host.LastIndexOf(':');
        if (colon < 0 || host.Length - colon <= 5 || host.AsSpan(colon).Contains(']'))
        {
            return false; // no port, a short one, or a colon of an IPv6 literal
        }

        // Leading zeros are allowed (RFC 3986 §3.2.3: port = *DIGIT); anything but digits is Kestrel's to refuse.
        var port = host.AsSpan(colon + 1).TrimStart('0');
        return !port.ContainsAnyExceptInRange('0', '9') &&
               (port.Length > 5 || (port.Length == 5 && int.Parse(port, System.Globalization.CultureInfo.InvariantCulture) > 65535));
    }

    /// <summary>
    /// Over HTTP/2 and HTTP/3 a field is a name and a value, not a line, and Kestrel checks a name only for upper
    /// case and NUL: a name holding CR LF ("x: a\r\ntransfer-encoding") would become two lines of the HTTP/1.1
    /// request sidekick writes to the backend, a smuggled Transfer-Encoding. RFC 9113 §8.2.1 makes such a request
    /// malformed: a name must be a token (RFC 9110 §5.6.2), a value must hold no NUL, CR or LF. A target with a
    /// space or a control character (RFC 9113 §8.3.1 asks for a valid request-target) would split the request line.
    /// </summary>
    private static string? UnwritableOnHttp1(IHeaderDictionary headers, string? target)
    {
        if (target is not null && target.AsSpan().IndexOfAnyExceptInRange('\u0021', '\u007e') >= 0)
        {
            return "request target with a space, a control or a non-ASCII character";
        }

        foreach (var (name, values) in headers)
        {
            // A pseudo-header Kestrel left in the collection is never copied to the backend (ForwardingHeaders).
            if (name.StartsWith(':'))
            {
                continue;
            }

            if (!IsToken(name))
            {
                return "field name that is not a token";
            }

            foreach (var value in values)
            {
                if (value is not null && value.AsSpan().IndexOfAny(LineBreaking) >= 0)
                {
                    return "field value with NUL, CR or LF";
                }
            }
        }

        return null;
    }

    /// <summary>
    /// Whether <paramref name="name"/> is a token (RFC 9110 §5.6.2), as a field name must be. Kestrel's HTTP/1.1 parser
    /// takes names with controls in them (<c>X\x01A</c>); the HTTP/1.1 forwarder leaves such a field out, as HttpClient
    /// on YARP's path does, rather than write bytes a backend may split differently.
    /// </summary>
    public static bool IsToken(string name) => name.Length > 0 && name.AsSpan().IndexOfAnyExcept(TokenCharacters) < 0;

    private static readonly SearchValues<char> TokenCharacters =
        SearchValues.Create("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");

    private static readonly SearchValues<char> LineBreaking = SearchValues.Create("\0\r\n");

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

    /// <summary>The request is <c>OPTIONS *</c> (the asterisk-form target, RFC 9112 §3.2.4).</summary>
    public static bool AsksAboutTheServer(HttpContext context) =>
        HttpMethods.IsOptions(context.Request.Method) && context.Features.Get<IHttpRequestFeature>()?.RawTarget == "*";

    public static Task RejectAsync(HttpContext context, string violation)
    {
        context.Response.StatusCode = StatusCodes.Status400BadRequest;
        context.Response.Headers.Connection = "close";
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync($"bad request: {violation}\n");
    }
}
