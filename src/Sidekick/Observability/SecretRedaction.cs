using System.Buffers;
using System.Text;

namespace Sidekick.Observability;

/// <summary>
/// The one rule for credentials in anything sidekick prints (trace records, --debug headers and bodies, log
/// lines): the name stays, the value becomes <see cref="Redacted"/>. Header values of credential headers go
/// whole; in queries and in text, only the values of the signed-URL credential parameters. Records keep the raw values
/// (they never leave the process); the rule is applied where a record or reason turns into text, on the
/// output writer, so the request path pays nothing for it.
/// </summary>
internal static class SecretRedaction
{
    public const string Redacted = "REDACTED";

    /// <summary>
    /// Headers whose whole value is a credential: the request's authorisation and cookies, the STS session
    /// token, SSE-C encryption keys (the customer's key itself) and Swift's auth tokens.
    /// </summary>
    private static readonly HashSet<string> HeaderNames = new(StringComparer.OrdinalIgnoreCase)
    {
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-Amz-Security-Token",
        "X-Amz-Server-Side-Encryption-Customer-Key",
        "X-Amz-Copy-Source-Server-Side-Encryption-Customer-Key",
        "X-Auth-Token",
        "X-Storage-Token",
        "X-Api-Key",
    };

    /// <summary>
    /// Elements of S3 error bodies that echo the request's signature material (SignatureDoesNotMatch): the
    /// canonical request carries the query and the x-amz-security-token header.
    /// </summary>
    private static readonly string[] ErrorBodyElements = ["SignatureProvided", "StringToSign", "StringToSignBytes", "CanonicalRequest", "CanonicalRequestBytes", "AWSAccessKeyId"];

    /// <summary>
    /// The query parameters whose values sign or authorise a request: the list the cache treats as credentials
    /// (SigV4, SigV2, Google Cloud Storage's signed URLs, Azure's SAS).
    /// </summary>
    private static readonly SearchValues<string> Candidates = SearchValues.Create(Security.CredentialParameters.Names.AsSpan(), StringComparison.OrdinalIgnoreCase);

    /// <summary>Characters that may be part of a parameter name: a candidate preceded by one is not a name of its own.</summary>
    private static readonly SearchValues<char> NameCharacters = SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.%");

    /// <summary>Where a parameter's value ends in free text (a URL inside a sentence, a header value, XML).</summary>
    private static readonly SearchValues<char> TextValueEnd = SearchValues.Create("&; \t\r\n\"'<>,#");

    /// <summary>Where a URL's authority (and so its user information) ends.</summary>
    private static readonly SearchValues<char> AuthorityEnd = SearchValues.Create("/?# \t\r\n\"'<>");

    /// <summary>Where user information that holds '/', '?', '#' or a space ends at the latest: the text around the URL.</summary>
    private static readonly SearchValues<char> UserInfoEnd = SearchValues.Create("\t\r\n\"'<>");

    /// <summary>The characters of a host name or an IPv4 address.</summary>
    private static readonly SearchValues<char> HostCharacters = SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%");

    public static bool IsSecretHeader(string name) => HeaderNames.Contains(name);

    /// <summary>A header value as it may be printed.</summary>
    public static string HeaderValue(string name, string value) => IsSecretHeader(name) ? Redacted : Text(value);

    /// <summary>
    /// A raw query string (without '?'): every parameter in its place, names as sent, the values of the
    /// signing parameters replaced. Names compare case-insensitively and percent-decoded; parameters are
    /// separated by '&amp;' or ';' (some servers accept either, so both count).
    /// </summary>
    public static string Query(string query)
    {
        // Fast path: nothing that could be a signing parameter (an encoded name needs a '%').
        if (query.AsSpan().IndexOfAny(Candidates) < 0 && !query.Contains('%', StringComparison.Ordinal))
        {
            return query;
        }

        StringBuilder? redacted = null;
        var start = 0;
        while (start <= query.Length)
        {
            var length = query.AsSpan(start).IndexOfAny('&', ';');
            var end = length < 0 ? query.Length : start + length;
            var parameter = query.AsSpan(start, end - start);
            var equals = parameter.IndexOf('=');
            if (equals >= 0 && IsSecretParameter(parameter[..equals]))
            {
                redacted ??= new StringBuilder(query.Length).Append(query, 0, start);
                redacted.Append(parameter[..(equals + 1)]).Append(Redacted);
            }
            else
            {
                redacted?.Append(parameter);
            }

            if (end < query.Length)
            {
                redacted?.Append(query[end]);
            }

            start = end + 1;
        }

        return redacted?.ToString() ?? query;
    }

    /// <summary>
    /// An address as the operator typed it (a SITE endpoint, the cache endpoint), for a message about it: whatever
    /// precedes the last '@' of the authority goes, with or without a <c>scheme://</c> before it (<c>u:pw@h:1</c> is
    /// refused for its missing scheme, and must not be echoed), and so do the values of a query and a fragment.
    /// </summary>
    public static string Address(string text)
    {
        var scheme = text.IndexOf("://", StringComparison.Ordinal);
        var start = scheme < 0 ? 0 : scheme + 3;
        var at = text.LastIndexOf('@');
        if (at >= start)
        {
            text = string.Concat(text.AsSpan(0, start), Redacted, text.AsSpan(at));
        }

        var rest = text.AsSpan(start).IndexOfAny('?', '#');
        return rest < 0 ? text : string.Concat(text.AsSpan(0, start + rest + 1), Redacted);
    }

    /// <summary>A configured URL as sidekick prints it (logs, /v1/state): without a trailing slash, its secrets out.</summary>
    public static string Url(Uri url) => Text(url.ToString().TrimEnd('/'));

    /// <summary>
    /// Free text that may hold a URL or a query (a probe failure, a Location or Referer header, an error about
    /// a SITE): each <c>name=value</c> of a signing parameter that starts a word or follows '?', '&amp;' or ';'
    /// keeps its name and loses its value (up to '&amp;', ';', a space, a quote, '&lt;', '&gt;', ',' or '#'), and
    /// a URL's user information (<c>user:password@</c>, <c>TOKEN@</c>) goes too. Names compare as in <see cref="Query"/>:
    /// case-insensitively and percent-decoded (an S3 server decodes <c>X-Amz-Signatur%65</c>).
    /// </summary>
    public static string Text(string text)
    {
        text = UserInfo(text);
        var span = text.AsSpan();
        // Fast path: nothing that could be a signing parameter (an encoded name needs a '%').
        if (span.IndexOfAny(Candidates) < 0 && !span.Contains('%'))
        {
            return text;
        }

        StringBuilder? redacted = null;
        var copied = 0;
        var position = 0;
        while (position < text.Length)
        {
            var found = span[position..].IndexOf('=');
            if (found < 0)
            {
                break;
            }

            // The name is the run of name characters before the '=', so it starts a word or follows '?', '&' or ';'
            // (a redacted value ends at a character that is not one, so a name never reaches into it).
            var equals = position + found;
            var nameStart = span[..equals].LastIndexOfAnyExcept(NameCharacters) + 1;
            if (!IsSecretParameter(span[nameStart..equals]))
            {
                position = equals + 1;
                continue;
            }

            var valueStart = equals + 1;
            var valueLength = span[valueStart..].IndexOfAny(TextValueEnd);
            var valueEnd = valueLength < 0 ? text.Length : valueStart + valueLength;
            redacted ??= new StringBuilder(text.Length);
            redacted.Append(text, copied, valueStart - copied).Append(Redacted);
            copied = valueEnd;
            position = valueEnd;
        }

        return redacted is null ? text : redacted.Append(text, copied, text.Length - copied).ToString();
    }

    /// <summary>
    /// <c>scheme://userinfo@host</c> becomes <c>scheme://REDACTED@host</c>, the user too: a user alone is often a
    /// token (<c>http://TOKEN@host</c>). A password typed as is may hold '/', '?', '#' or a space, which end a URL's
    /// authority; so when what precedes the first of them is not a host (and port), as <c>user:pa</c> of
    /// <c>http://user:pa/ss@host</c> is not, the user information runs to the last '@' before the text around the
    /// URL resumes (a quote, '&lt;', '&gt;', a line end, the next URL). After a host, '/' and the rest end the
    /// authority as in any URL: <c>http://h/p@q</c> keeps its path.
    /// </summary>
    private static string UserInfo(string text)
    {
        var scheme = text.IndexOf("://", StringComparison.Ordinal);
        if (scheme < 0)
        {
            return text;
        }

        StringBuilder? redacted = null;
        var copied = 0;
        while (scheme >= 0)
        {
            var authority = scheme + 3;
            var length = text.AsSpan(authority).IndexOfAny(AuthorityEnd);
            var end = length < 0 ? text.Length : authority + length;
            var at = text.AsSpan(authority, end - authority).LastIndexOf('@');
            if (at < 0 && end < text.Length && !IsHostAndPort(text.AsSpan(authority, end - authority)))
            {
                var next = text.IndexOf("://", end, StringComparison.Ordinal);
                var around = text.AsSpan(end, (next < 0 ? text.Length : next) - end).IndexOfAny(UserInfoEnd);
                var limit = around < 0 ? (next < 0 ? text.Length : next) : end + around;
                at = text.AsSpan(authority, limit - authority).LastIndexOf('@');
            }

            if (at >= 0)
            {
                redacted ??= new StringBuilder(text.Length);
                redacted.Append(text, copied, authority - copied).Append(Redacted);
                copied = authority + at;
                end = Math.Max(end, copied);
            }

            scheme = end < text.Length ? text.IndexOf("://", end, StringComparison.Ordinal) : -1;
        }

        return redacted is null ? text : redacted.Append(text, copied, text.Length - copied).ToString();
    }

    /// <summary>
    /// Whether an authority without '@' is a host and an optional port (<c>h</c>, <c>h:9000</c>, <c>[::1]:1</c>), not
    /// the start of user information cut by a '/', '?', '#' or space in it (<c>user:pa</c>); punctuation that ends a
    /// sentence after the port does not count.
    /// </summary>
    private static bool IsHostAndPort(ReadOnlySpan<char> authority)
    {
        authority = authority.TrimEnd(".,;:)");
        if (authority.StartsWith('['))
        {
            var close = authority.IndexOf(']');
            if (close < 0)
            {
                return false;
            }

            authority = authority[(close + 1)..];
            return authority.IsEmpty || (authority[0] == ':' && !authority[1..].ContainsAnyExceptInRange('0', '9'));
        }

        var colon = authority.IndexOf(':');
        var host = colon < 0 ? authority : authority[..colon];
        var port = colon < 0 ? [] : authority[(colon + 1)..];
        return !host.ContainsAnyExcept(HostCharacters) && !port.ContainsAnyExceptInRange('0', '9');
    }

    /// <summary>
    /// The start of an error body, for --debug: the signature material S3 echoes in a SignatureDoesNotMatch
    /// answer is replaced whole, and any signing parameter elsewhere in it as in <see cref="Text"/>.
    /// </summary>
    public static string ErrorBody(string body)
    {
        foreach (var element in ErrorBodyElements)
        {
            var open = "<" + element + ">";
            var close = "</" + element + ">";
            var from = 0;
            int start;
            while ((start = body.IndexOf(open, from, StringComparison.Ordinal)) >= 0)
            {
                var inner = start + open.Length;
                var end = body.IndexOf(close, inner, StringComparison.Ordinal);
                // A body cut at 64 KiB may end inside the element: everything after the tag goes.
                body = string.Concat(body.AsSpan(0, inner), Redacted, end < 0 ? "" : body.AsSpan(end));
                from = inner + Redacted.Length;
            }
        }

        return Text(body);
    }

    private static bool IsSecretParameter(ReadOnlySpan<char> name)
    {
        if (!name.Contains('%'))
        {
            return Security.CredentialParameters.Contains(name);
        }

        foreach (var candidate in Security.CredentialParameters.Names)
        {
            if (DecodedEquals(name, candidate))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Compares a percent-encoded name with <paramref name="expected"/> without decoding it into a new string.</summary>
    private static bool DecodedEquals(ReadOnlySpan<char> encoded, string expected)
    {
        var matched = 0;
        for (var i = 0; i < encoded.Length; i++)
        {
            var c = encoded[i];
            if (c == '%' && i + 2 < encoded.Length && char.IsAsciiHexDigit(encoded[i + 1]) && char.IsAsciiHexDigit(encoded[i + 2]))
            {
                c = (char)((HexValue(encoded[i + 1]) << 4) | HexValue(encoded[i + 2]));
                i += 2;
            }

            if (matched == expected.Length || char.ToUpperInvariant(c) != char.ToUpperInvariant(expected[matched]))
            {
                return false;
            }

            matched++;
        }

        return matched == expected.Length;
    }

    private static int HexValue(char c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}
