using System.Globalization;
using Microsoft.Extensions.Primitives;

namespace Sidekick.Caching;

/// <summary>
/// <c>CDN-Cache-Control</c> (RFC 9213): cache directives an origin addresses to the shared caches in front of it,
/// a Structured Field Dictionary (RFC 8941). sidekick takes from it only what makes it more careful than
/// Cache-Control alone: <c>no-store</c>, <c>private</c>, <c>no-cache</c>, <c>must-revalidate</c>, and a
/// <c>max-age</c> shorter than the response's own lifetime. It never lets the field lengthen a lifetime or allow a
/// store that Cache-Control forbids: an origin gives its CDN a long <c>max-age</c> because it can purge that CDN,
/// and it cannot purge a sidecar's bucket. A field that is not a valid dictionary is ignored whole (§2.1).
/// </summary>
internal sealed class TargetedCacheControl
{
    /// <summary>The response field's name.</summary>
    public const string FieldName = "CDN-Cache-Control";

    /// <summary>2^31 seconds, what RFC 9111 §1.2.2 makes of a delta-seconds too large to represent.</summary>
    private const long MaxSeconds = 2147483648;

    /// <summary>The directives of RFC 9213 §2.1 that only restrict, as the bare names Cache-Control spells them.</summary>
    private static readonly string[] Restricting = ["no-store", "private", "no-cache", "must-revalidate"];

    private TargetedCacheControl(string[] restricting, TimeSpan? maxAge)
    {
        RestrictingDirectives = restricting;
        MaxAge = maxAge;
    }

    /// <summary>Which of no-store, private, no-cache and must-revalidate the field sets (true, or with any value).</summary>
    public IReadOnlyList<string> RestrictingDirectives { get; }

    /// <summary>The field's max-age (a non-negative integer), when it has one; a lifetime longer than it is cut to it.</summary>
    public TimeSpan? MaxAge { get; }

    /// <summary>The field's directives; null when absent or not a valid Structured Field Dictionary.</summary>
    public static TargetedCacheControl? Parse(StringValues lines)
    {
        if (StringValues.IsNullOrEmpty(lines))
        {
            return null;
        }

        // The lines of one field are one dictionary (RFC 8941 §4.2: combined with commas; an empty line adds nothing).
        var text = string.Join(',', lines.Where(line => !string.IsNullOrWhiteSpace(line)));
        if (text.Length == 0)
        {
            return null;
        }

        var members = new Dictionary<string, string?>(StringComparer.Ordinal);
        if (!TryReadDictionary(text, members))
        {
            return null;
        }

        var restricting = Restricting.Where(name => members.TryGetValue(name, out var value) && value != "?0").ToArray();
        TimeSpan? maxAge = members.TryGetValue("max-age", out var seconds) && seconds is not null &&
                           long.TryParse(seconds, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed)
            ? TimeSpan.FromSeconds(Math.Min(parsed, MaxSeconds)) // up to 15 digits: more than a TimeSpan holds
            : null; // absent, or of another type (a decimal, a string, a negative integer): ignored alone (§2.1)
        return new TargetedCacheControl(restricting, maxAge);
    }

    /// <summary>
    /// Reads the dictionary's members into <paramref name="members"/> as key and bare value (null for a member without
    /// one, which is true), parameters left out; false at the first byte that is not a valid dictionary.
    /// </summary>
    private static bool TryReadDictionary(string text, Dictionary<string, string?> members)
    {
        var position = 0;
        while (true)
        {
            SkipSpaces(text, ref position);
            var keyStart = position;
            if (!SkipKey(text, ref position))
            {
                return false; // an empty member (a trailing comma included), or not a key
            }

            var key = text[keyStart..position];
            string? value = null;
            if (position < text.Length && text[position] == '=')
            {
                var valueStart = ++position;
                if (!(position < text.Length && text[position] == '(' ? SkipInnerList(text, ref position) : SkipBareItem(text, ref position)))
                {
                    return false;
                }

                value = text[valueStart..position];
            }

            while (position < text.Length && text[position] == ';')
            {
                // Parameters (";name" or ";name=item"): allowed, and meaningless for these directives.
                position++;
                SkipSpaces(text, ref position);
                if (!SkipKey(text, ref position))
                {
                    return false;
                }

                if (position < text.Length && text[position] == '=')
                {
                    position++;
                    if (!SkipBareItem(text, ref position))
                    {
                        return false;
                    }
                }
            }

            members[key] = value; // a key given twice keeps its last value (RFC 8941 §3.2)
            SkipSpaces(text, ref position);
            if (position >= text.Length)
            {
                return true;
            }

            if (text[position] != ',')
            {
                return false;
            }

            position++;
        }
    }

    /// <summary>Moves past a key (RFC 8941 §3.1.2): a lowercase letter or '*', then lowercase letters, digits, '_', '-', '.', '*'.</summary>
    private static bool SkipKey(string text, ref int position)
    {
        if (position >= text.Length || !(text[position] is >= 'a' and <= 'z' or '*'))
        {
            return false;
        }

        while (++position < text.Length && text[position] is >= 'a' and <= 'z' or >= '0' and <= '9' or '_' or '-' or '.' or '*')
        {
        }

        return true;
    }

    /// <summary>Moves past an inner list (RFC 8941 §3.1.1): bare items separated by spaces, in parentheses.</summary>
    private static bool SkipInnerList(string text, ref int position)
    {
        position++; // the '('
        while (true)
        {
            SkipSpaces(text, ref position);
            if (position >= text.Length)
            {
                return false;
            }

            if (text[position] == ')')
            {
                position++;
                return true;
            }

            if (!SkipBareItem(text, ref position) || (position < text.Length && text[position] is not (' ' or ')')))
            {
                return false;
            }
        }
    }

    /// <summary>Moves past one bare item (RFC 8941 §3.3): an integer or decimal, a string, a token, a byte sequence or a boolean.</summary>
    private static bool SkipBareItem(string text, ref int position)
    {
        if (position >= text.Length)
        {
            return false;
        }

        var c = text[position];
        if (c is '-' or (>= '0' and <= '9'))
        {
            var start = position;
            position += c == '-' ? 1 : 0;
            var digits = 0;
            while (position < text.Length && char.IsAsciiDigit(text[position]))
            {
                position++;
                digits++;
            }

            if (position < text.Length && text[position] == '.')
            {
                position++;
                var fraction = 0;
                while (position < text.Length && char.IsAsciiDigit(text[position]))
                {
                    position++;
                    fraction++;
                }

                return digits is >= 1 and <= 12 && fraction is >= 1 and <= 3;
            }

            return digits is >= 1 and <= 15 && position > start;
        }

        if (c == '"')
        {
            position++;
            while (position < text.Length && text[position] != '"')
            {
                if (text[position] == '\\')
                {
                    position++;
                    if (position >= text.Length || text[position] is not ('"' or '\\'))
                    {
                        return false;
                    }
                }
                else if (text[position] is < ' ' or > '~')
                {
                    return false;
                }

                position++;
            }

            if (position >= text.Length)
            {
                return false; // unterminated
            }

            position++;
            return true;
        }

        if (c == ':')
        {
            var end = text.IndexOf(':', position + 1);
            if (end < 0)
            {
                return false;
            }

            for (var i = position + 1; i < end; i++)
            {
                if (!(char.IsAsciiLetterOrDigit(text[i]) || text[i] is '+' or '/' or '='))
                {
                    return false;
                }
            }

            position = end + 1;
            return true;
        }

        if (c == '?')
        {
            if (position + 1 < text.Length && text[position + 1] is '0' or '1')
            {
                position += 2;
                return true;
            }

            return false;
        }

        if (char.IsAsciiLetter(c) || c == '*')
        {
            position++;
            while (position < text.Length && (char.IsAsciiLetterOrDigit(text[position]) || "!#$%&'*+-.^_`|~:/".Contains(text[position])))
            {
                position++;
            }

            return true;
        }

        return false;
    }

    private static void SkipSpaces(string text, ref int position)
    {
        while (position < text.Length && text[position] is ' ' or '\t')
        {
            position++;
        }
    }
}
