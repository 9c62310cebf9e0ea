using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// What the cache keeps about a stored response besides its body: status, the end-to-end headers, when it
/// was received (for Age, RFC 9111 §4.2.3), the Vary-selected request headers, and whether every reuse must
/// be confirmed by the backend with the requester's own credentials. Kept as S3 user metadata (compact JSON).
/// </summary>
internal sealed record CachedResponse
{
    /// <summary>Response headers worth keeping; hop-by-hop and per-connection ones are left out.</summary>
    private static readonly HashSet<string> Skipped = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "TE", "Trailer",
        "Set-Cookie", "X-Proxy", "X-Cache", "Age", "Date",
    };

    public required int Status { get; init; }
    public required IReadOnlyList<KeyValuePair<string, string>> Headers { get; init; }
    public required long Length { get; init; }
    /// <summary>When the response was received (response_time).</summary>
    public required DateTimeOffset ReceivedAt { get; init; }
    /// <summary>corrected_initial_age at the time it was received.</summary>
    public required TimeSpan InitialAge { get; init; }
    /// <summary>The backend's Date header (for heuristic freshness and age).</summary>
    public DateTimeOffset? Date { get; init; }
    public IReadOnlyList<string> VaryNames { get; init; } = [];
    public IReadOnlyList<string> VaryValues { get; init; } = [];
    /// <summary>
    /// Filled from a request that carried credentials: every reuse, for any requester, waits for that
    /// requester's own conditional request to come back 304 (RFC 9111 §3.5; see docs/cache.md).
    /// </summary>
    public bool FilledWithCredentials { get; init; }

    public string? Header(string name) =>
        Headers.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;

    /// <summary>
    /// The directives of every Cache-Control field line, not only the first (RFC 9110 §5.3), made as careful as the
    /// response's CDN-Cache-Control asks (<see cref="TargetedCacheControl"/>).
    /// </summary>
    public CacheControl CacheControl() =>
        Caching.CacheControl.Parse(Lines(HeaderNames.CacheControl)).RestrictedBy(TargetedCacheControl.Parse(Lines(TargetedCacheControl.FieldName)));

    private Microsoft.Extensions.Primitives.StringValues Lines(string name) =>
        new(Headers.Where(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value).ToArray());

    public string? ETag => Header(HeaderNames.ETag);

    public DateTimeOffset? LastModified => HttpDate(Header(HeaderNames.LastModified));

    /// <summary>The length of a response's content: a 204 has none (RFC 9110 §15.3.5), else its Content-Length.</summary>
    public static long? BodyLength(int status, long? contentLength) =>
        status == StatusCodes.Status204NoContent ? 0 : contentLength;

    /// <summary>Whether the stored status is one that never carries content (RFC 9110 §6.4.1).</summary>
    public bool HasNoContent => Status is StatusCodes.Status204NoContent or StatusCodes.Status304NotModified;

    public static bool KeepHeader(string name) => !Skipped.Contains(name);

    /// <summary>
    /// An HTTP-date in any of its three formats (RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and
    /// asctime forms a recipient must accept); null when the value is none of them, a wrong weekday included.
    /// Each separator is exactly one space (the grammar's SP), but for asctime's space-padded day of the month
    /// ("Dec  1"): "Thu, 18  Aug  2050 …" is not an HTTP-date (an invalid Expires means already expired, RFC 9111 §5.3).
    /// </summary>
    public static DateTimeOffset? HttpDate(string? value)
    {
        if (value is null)
        {
            return null;
        }

        value = value.Trim(' ', '\t');
        if (value.Length == 24 && value.AsSpan(7, 3) is [' ', ' ', >= '1' and <= '9'])
        {
            value = string.Concat(value.AsSpan(0, 8), "0", value.AsSpan(9)); // asctime "Dec  1" as "Dec 01"
        }

        if (value.Contains("  ", StringComparison.Ordinal))
        {
            return null;
        }

        foreach (var format in HttpDateFormats)
        {
            // HTTP-date is case-sensitive (§5.6.7: "Dec", never "DEC"), and parsing ignores case: the date must read
            // back exactly as it came.
            if (DateTimeOffset.TryParseExact(value, format, HttpDateCulture, DateTimeStyles.AssumeUniversal, out var date) &&
                string.Equals(date.ToString(format, HttpDateCulture), value, StringComparison.Ordinal))
            {
                return date;
            }
        }

        return null;
    }

    private static readonly string[] HttpDateFormats =
        ["r", "dddd, dd-MMM-yy HH:mm:ss 'GMT'", "ddd MMM dd HH:mm:ss yyyy"];

    /// <summary>
    /// RFC 850 dates have two-digit years, read as the most recent such year no more than 50 years ahead
    /// (RFC 9110 §5.6.7).
    /// </summary>
    private static readonly CultureInfo HttpDateCulture = RecentCentury();

    private static CultureInfo RecentCentury()
    {
        var culture = (CultureInfo)CultureInfo.InvariantCulture.Clone();
        culture.DateTimeFormat.Calendar.TwoDigitYearMax = DateTime.UtcNow.Year + 50;
        return culture;
    }

    public string Serialize()
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteNumber("s", Status);
            json.WriteNumber("l", Length);
            json.WriteNumber("r", ReceivedAt.ToUnixTimeMilliseconds());
            json.WriteNumber("a", (long)InitialAge.TotalSeconds);
            if (Date is { } date)
            {
                json.WriteNumber("d", date.ToUnixTimeSeconds());
            }

            json.WriteBoolean("c", FilledWithCredentials);
            json.WriteStartArray("h");
            foreach (var (name, value) in Headers)
            {
                json.WriteStringValue(name);
                json.WriteStringValue(value);
            }

            json.WriteEndArray();
            json.WriteStartArray("v");
            for (var i = 0; i < VaryNames.Count; i++)
            {
                json.WriteStringValue(VaryNames[i]);
                json.WriteStringValue(VaryValues[i]);
            }

            json.WriteEndArray();
            json.WriteEndObject();
        }

        return Convert.ToBase64String(buffer.ToArray());
    }

    public static CachedResponse? Deserialize(string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            return null;
        }

        try
        {
            using var document = JsonDocument.Parse(Convert.FromBase64String(text));
            var root = document.RootElement;
            var headers = new List<KeyValuePair<string, string>>();
            var list = root.GetProperty("h");
            for (var i = 0; i + 1 < list.GetArrayLength(); i += 2)
            {
                var (name, value) = (list[i].GetString(), list[i + 1].GetString());
                if (name is null || value is null)
                {
                    return null;
                }

                // What a fill never stores (Set-Cookie, hop-by-hop fields, …) is not served from an object that
                // holds it either: anything with write access to the bucket could have put it there.
                if (KeepHeader(name))
                {
                    headers.Add(new(name, value));
                }
            }

            var varyNames = new List<string>();
            var varyValues = new List<string>();
            var vary = root.GetProperty("v");
            for (var i = 0; i + 1 < vary.GetArrayLength(); i += 2)
            {
                varyNames.Add(vary[i].GetString()!);
                varyValues.Add(vary[i + 1].GetString()!);
            }

            var status = root.GetProperty("s").GetInt32();
            var length = root.GetProperty("l").GetInt64();
            if (status is < 200 or > 599 || length < 0)
            {
                return null;
            }

            return new CachedResponse
            {
                Status = status,
                Length = length,
                ReceivedAt = DateTimeOffset.FromUnixTimeMilliseconds(root.GetProperty("r").GetInt64()),
                InitialAge = TimeSpan.FromSeconds(root.GetProperty("a").GetInt64()),
                Date = root.TryGetProperty("d", out var d) ? DateTimeOffset.FromUnixTimeSeconds(d.GetInt64()) : null,
                // Entries of earlier versions kept "p", which was false for a credentialed fill marked public:
                // without "c" nobody can tell, so such an entry is treated as filled with credentials.
                FilledWithCredentials = !root.TryGetProperty("c", out var credentials) || credentials.GetBoolean(),
                Headers = headers,
                VaryNames = varyNames,
                VaryValues = varyValues,
            };
        }
        catch (Exception ex) when (ex is FormatException or JsonException or KeyNotFoundException or InvalidOperationException or ArgumentException or OverflowException)
        {
            // Not ours or damaged (a time or an age out of range throws ArgumentOutOfRangeException): a miss.
            return null;
        }
    }

    /// <summary>Size check against S3's 2 KB user-metadata limit (with room for the key name).</summary>
    public static bool FitsInMetadata(string serialized) => Encoding.ASCII.GetByteCount(serialized) <= 1900;
}
