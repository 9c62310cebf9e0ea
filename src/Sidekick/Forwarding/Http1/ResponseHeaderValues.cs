using System.Text;
using Microsoft.Extensions.Primitives;

namespace Sidekick.Forwarding.Http1;

/// <summary>
/// Header names a backend commonly sends, so parsing one costs no string, and a memory of their last values
/// (Date, Server, Content-Type, … repeat from response to response) for the same reason. One memory serves
/// all connections to a backend: with hundreds of connections a per-connection one was rarely in the CPU
/// cache (1 KiB x 256: 2.6 % of the user time, 0.7 % at x 32). Event loops on other threads may race on a
/// slot; a string is replaced whole and every reuse compares the bytes first, so a race costs only a miss.
/// </summary>
internal sealed class ResponseHeaderValues
{
    // Indexes in Names of the fields that frame the body or the connection.
    public const int ContentLength = 0;
    public const int Connection = 7;
    public const int TransferEncoding = 9;

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

    /// <summary>Indexes of the names of each length: a name is compared only with the few as long as it.</summary>
    private static readonly int[][] ByLength = Enumerable.Range(0, Names.Max(n => n.Length) + 1)
        .Select(length => Enumerable.Range(0, Names.Length).Where(i => Names[i].Length == length).ToArray())
        .ToArray();

    /// <summary>Known names never copied to the client: hop-by-hop ones, and Content-Length (Kestrel frames the body).</summary>
    private static readonly bool[] Dropped = Names
        .Select(n => HopByHopHeaders.Contains(n) || n.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
        .ToArray();

    private readonly string?[] _lastValues = new string?[Names.Length];

    private readonly Appended?[] _lastAppended = new Appended?[Names.Length];

    /// <summary>Index of a known name (ASCII case-insensitive), or -1.</summary>
    public static int IndexOf(ReadOnlySpan<byte> name)
    {
        if ((uint)name.Length >= (uint)ByLength.Length)
        {
            return -1;
        }

        foreach (var i in ByLength[name.Length])
        {
            // The first letter (case folded) rules most candidates out without a call.
            var known = NameBytes[i];
            if ((known[0] | 0x20) == (name[0] | 0x20) && System.Text.Ascii.EqualsIgnoreCase(known, name))
            {
                return i;
            }
        }

        return -1;
    }

    public static string NameAt(int index) => Names[index];

    public static bool IsDropped(int index) => Dropped[index];

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

    /// <summary>
    /// A value the proxy set before (Server: SideKick) with the backend's appended, reusing the previous
    /// pair's array when both strings are the same ones. StringValues never writes into its array, so one
    /// array can stand in many responses.
    /// </summary>
    public StringValues Append(int knownIndex, StringValues existing, string value)
    {
        if (knownIndex < 0 || existing.Count != 1)
        {
            return StringValues.Concat(existing, value);
        }

        var first = existing[0];
        if (_lastAppended[knownIndex] is { } last && ReferenceEquals(last.First, first) && ReferenceEquals(last.Second, value))
        {
            return last.Both;
        }

        var both = StringValues.Concat(existing, value);
        _lastAppended[knownIndex] = new Appended(first, value, both);
        return both;
    }

    /// <summary>Latin-1, as HttpClient decodes response headers: every byte maps to one char and back.</summary>
    public static string Decode(ReadOnlySpan<byte> value) => value.IsEmpty ? "" : Encoding.Latin1.GetString(value);

    /// <summary>Replaced whole, so a thread racing on the slot sees a consistent pair.</summary>
    private sealed record Appended(string? First, string Second, StringValues Both);
}
