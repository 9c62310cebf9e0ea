using System.Text;

namespace Sidekick.Forwarding.Http1;

/// <summary>
/// Header names a backend commonly sends, so parsing one costs no string, and a per-connection memory of
/// their last values (Date, Server, Content-Type, … repeat from response to response) for the same reason.
/// </summary>
internal sealed class ResponseHeaderValues
{
    private static readonly string[] Names =
    [
        "Content-Length", "Content-Type", "Date", "Server", "ETag", "Last-Modified", "Accept-Ranges",
        "Connection", "Keep-Alive", "Transfer-Encoding", "Cache-Control", "Expires", "Vary", "Content-Encoding",
        "Content-Range", "Content-Disposition", "Content-Language", "Location", "Set-Cookie", "Age",
        "Strict-Transport-Security", "X-Content-Type-Options", "X-Xss-Protection", "Content-Security-Policy",
        "X-Amz-Request-Id", "X-Amz-Id-2", "X-Amz-Bucket-Region", "X-Ratelimit-Limit", "X-Ratelimit-Remaining",
        "Retry-After", "WWW-Authenticate",
    ];

    private static readonly byte[][] NameBytes = Names.Select(Encoding.ASCII.GetBytes).ToArray();

    private readonly string?[] _lastValues = new string?[Names.Length];

    /// <summary>Index of a known name (ASCII case-insensitive), or -1.</summary>
    public static int IndexOf(ReadOnlySpan<byte> name)
    {
        for (var i = 0; i < NameBytes.Length; i++)
        {
            if (NameBytes[i].Length == name.Length && System.Text.Ascii.EqualsIgnoreCase(NameBytes[i], name))
            {
                return i;
            }
        }

        return -1;
    }

    public static string NameAt(int index) => Names[index];

    /// <summary>The value as a string, reusing the previous one when the bytes are the same.</summary>
    public string Value(int knownIndex, ReadOnlySpan<byte> value)
    {
        if (knownIndex < 0)
        {
            return Decode(value);
        }

        var last = _lastValues[knownIndex];
        if (last is not null && System.Text.Ascii.Equals(value, last))
        {
            return last;
        }

        return _lastValues[knownIndex] = Decode(value);
    }

    /// <summary>Latin-1, as HttpClient decodes response headers: every byte maps to one char and back.</summary>
    public static string Decode(ReadOnlySpan<byte> value) => value.IsEmpty ? "" : Encoding.Latin1.GetString(value);
}
