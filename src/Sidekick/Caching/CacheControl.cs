using System.Globalization;
using Microsoft.Extensions.Primitives;

namespace Sidekick.Caching;

/// <summary>
/// Parsed Cache-Control directives (RFC 9111 §5.2): names case-insensitive, quoted values allowed, across
/// every field line. A directive given more than once has no valid value (§4.2.1), so a duplicated
/// freshness directive makes the response stale rather than picking one of the values.
/// </summary>
internal sealed class CacheControl
{
    private readonly Dictionary<string, string?> _directives = new(StringComparer.OrdinalIgnoreCase);
    private readonly HashSet<string> _duplicated = new(StringComparer.OrdinalIgnoreCase);

    private CacheControl()
    {
    }

    public static CacheControl Parse(StringValues headers)
    {
        var control = new CacheControl();
        foreach (var header in headers)
        {
            if (header is null)
            {
                continue;
            }

            var position = 0;
            while (position < header.Length)
            {
                var end = position;
                var inQuotes = false;
                while (end < header.Length && (inQuotes || header[end] != ','))
                {
                    inQuotes ^= header[end] == '"';
                    end++;
                }

                var part = header[position..end].Trim();
                position = end + 1;
                if (part.Length == 0)
                {
                    continue;
                }

                var equals = part.IndexOf('=', StringComparison.Ordinal);
                var name = equals < 0 ? part : part[..equals].Trim();
                var value = equals < 0 ? null : part[(equals + 1)..].Trim().Trim('"');
                if (!control._directives.TryAdd(name, value))
                {
                    control._duplicated.Add(name);
                }
            }
        }

        return control;
    }

    public bool Has(string directive) => _directives.ContainsKey(directive);

    /// <summary>The longest freshness lifetime the response's <c>CDN-Cache-Control</c> allows, when it sets one.</summary>
    public TimeSpan? TargetedMaxAge { get; private set; }

    /// <summary>
    /// A response's directives made as careful as its <c>CDN-Cache-Control</c> asks (<see cref="TargetedCacheControl"/>):
    /// its restricting directives join these, and its max-age caps the lifetime. Cache-Control's own values stay.
    /// </summary>
    public CacheControl RestrictedBy(TargetedCacheControl? targeted)
    {
        if (targeted is null)
        {
            return this;
        }

        foreach (var directive in targeted.RestrictingDirectives)
        {
            _directives.TryAdd(directive, null);
        }

        TargetedMaxAge = targeted.MaxAge;
        return this;
    }

    /// <summary>
    /// Delta-seconds value of a directive; null when absent, malformed (not a non-negative integer, RFC 9111
    /// §1.2.2) or given more than once (§4.2.1). <see cref="Has"/> tells the last two from absent.
    /// </summary>
    public TimeSpan? Seconds(string directive) =>
        !_duplicated.Contains(directive) &&
        _directives.TryGetValue(directive, out var value)
            ? DeltaSeconds(value)
            : null;

    /// <summary>
    /// A delta-seconds value (RFC 9111 §1.2.2): digits only; one too large to represent counts as 2^31 seconds, as
    /// the section requires (a max-age past the range of a long is for ever, not malformed). Null when not digits.
    /// </summary>
    public static TimeSpan? DeltaSeconds(string? value)
    {
        if (string.IsNullOrEmpty(value) || value.AsSpan().ContainsAnyExceptInRange('0', '9'))
        {
            return null;
        }

        return long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds) && seconds <= Int31
            ? TimeSpan.FromSeconds(seconds)
            : TimeSpan.FromSeconds(Int31);
    }

    /// <summary>2^31, the value §1.2.2 gives a delta-seconds too large to represent.</summary>
    private const long Int31 = 2147483648;

    /// <summary>
    /// <c>max-stale</c> without a value means any staleness is acceptable (RFC 9111 §5.2.1.2). One with a malformed
    /// value (<c>max-stale=abc</c>, <c>max-stale=</c>) or given twice is ignored: it asks for stale content, and a
    /// value the cache cannot read must not widen that ask to "any age".
    /// </summary>
    public TimeSpan? MaxStale =>
        !_directives.TryGetValue("max-stale", out var value) ? null
        : value is null && !_duplicated.Contains("max-stale") ? TimeSpan.MaxValue
        : Seconds("max-stale");
}
