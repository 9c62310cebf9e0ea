using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Sidekick.Caching;

/// <summary>
/// AWS Signature Version 4 for a request without a body or query (a HEAD to the store): the canonical request of the
/// method, the path and the headers host, x-amz-content-sha256, x-amz-date and any others named, signed with the key
/// derived for the day, the region and the service. The day's key is kept: four HMACs fewer per request.
/// </summary>
internal sealed class SigV4(string accessKey, string secretKey, string region, string service = "s3")
{
    /// <summary>The SHA-256 of an empty body, which S3 asks for in x-amz-content-sha256.</summary>
    public const string EmptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    private const string Algorithm = "AWS4-HMAC-SHA256";

    private DayKey? _dayKey;

    /// <summary>
    /// The headers to send with <paramref name="method"/> <paramref name="path"/> (already URI-encoded, as it goes on
    /// the request line) to <paramref name="host"/> (with its port when not the scheme's default) at
    /// <paramref name="now"/>. <paramref name="extra"/> are further headers to sign (lower-case names), sent as given.
    /// </summary>
    public SignedHeadersSet Sign(string method, string host, string path, DateTimeOffset now, params (string Name, string Value)[] extra)
    {
        var stamp = now.UtcDateTime.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture);
        var day = stamp[..8];
        (string Name, string Value)[] headers = [("host", host), ("x-amz-content-sha256", EmptyPayloadHash), ("x-amz-date", stamp), .. extra];
        Array.Sort(headers, static (a, b) => string.CompareOrdinal(a.Name, b.Name));
        var signedHeaders = string.Join(';', headers.Select(h => h.Name));
        var canonical = new StringBuilder().Append(method).Append('\n').Append(path).Append("\n\n");
        foreach (var (name, value) in headers)
        {
            canonical.Append(name).Append(':').Append(value.Trim()).Append('\n');
        }

        canonical.Append('\n').Append(signedHeaders).Append('\n').Append(EmptyPayloadHash);
        var scope = $"{day}/{region}/{service}/aws4_request";
        var toSign = $"{Algorithm}\n{stamp}\n{scope}\n{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonical.ToString())))}";
        var signature = Convert.ToHexStringLower(HMACSHA256.HashData(KeyFor(day), Encoding.UTF8.GetBytes(toSign)));
        return new SignedHeadersSet($"{Algorithm} Credential={accessKey}/{scope}, SignedHeaders={signedHeaders}, Signature={signature}", stamp, EmptyPayloadHash);
    }

    /// <summary>A path's segments encoded as SigV4 and S3 want them: every byte but the unreserved ones and '/' as %XX.</summary>
    public static string EncodePath(string path)
    {
        var encoded = new StringBuilder(path.Length);
        foreach (var b in Encoding.UTF8.GetBytes(path))
        {
            if (b is (>= (byte)'A' and <= (byte)'Z') or (>= (byte)'a' and <= (byte)'z') or (>= (byte)'0' and <= (byte)'9') or (byte)'-' or (byte)'_' or (byte)'.' or (byte)'~' or (byte)'/')
            {
                encoded.Append((char)b);
            }
            else
            {
                encoded.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }

        return encoded.ToString();
    }

    private byte[] KeyFor(string day)
    {
        if (Volatile.Read(ref _dayKey) is { } known && known.Day == day)
        {
            return known.Key;
        }

        var key = HMACSHA256.HashData(Encoding.UTF8.GetBytes("AWS4" + secretKey), Encoding.UTF8.GetBytes(day));
        key = HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(region));
        key = HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(service));
        key = HMACSHA256.HashData(key, "aws4_request"u8.ToArray());
        Volatile.Write(ref _dayKey, new DayKey(day, key));
        return key;
    }

    private sealed record DayKey(string Day, byte[] Key);
}

/// <summary>What a signed request carries: Authorization, x-amz-date and x-amz-content-sha256.</summary>
internal readonly record struct SignedHeadersSet(string Authorization, string AmzDate, string ContentSha256);
