using System.Globalization;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// A 206 that can be combined with others into the whole object (RFC 9111 §3.4): one range
/// (<c>Content-Range: bytes FIRST-LAST/COMPLETE</c>, not multipart/byteranges), the complete length known, a body of
/// exactly the range's length, and a strong ETag, the only proof that two ranges are of the same object.
/// </summary>
internal readonly record struct PartialContent(long First, long Last, long CompleteLength)
{
    public static bool TryRead(HttpResponse response, out PartialContent piece)
    {
        piece = default;
        var etags = response.Headers.ETag;
        if (etags.Count != 1 || etags[0] is not { Length: > 2 } etag || etag.StartsWith("W/", StringComparison.Ordinal) || etag[0] != '"' ||
            response.Headers.ContentRange.Count != 1)
        {
            return false;
        }

        var value = response.Headers.ContentRange[0].AsSpan().Trim();
        if (!value.StartsWith("bytes ", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        value = value[6..].TrimStart();
        var dash = value.IndexOf('-');
        var slash = value.IndexOf('/');
        if (dash <= 0 || slash <= dash ||
            !long.TryParse(value[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out var first) ||
            !long.TryParse(value[(dash + 1)..slash], NumberStyles.None, CultureInfo.InvariantCulture, out var last) ||
            !long.TryParse(value[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var complete))
        {
            return false; // "*" as the complete length included: an object of unknown length cannot be covered
        }

        if (first > last || last >= complete || response.ContentLength != last - first + 1)
        {
            return false;
        }

        piece = new PartialContent(first, last, complete);
        return true;
    }
}
