using System.Globalization;
using Sidekick.Cli;

namespace Sidekick.Topology;

/// <summary>
/// <c>{N...M}</c> range expansion as the Go sidekick does it (minio/pkg ellipses): decimal or lowercase hex
/// bounds, zero padding when a bound is written with a leading zero, several ranges in one item expanded as a
/// Cartesian product with the leftmost range varying fastest.
/// </summary>
internal static class Ellipsis
{
    /// <summary>
    /// Backends one item may expand to. A range of billions made a .NET error (or a wrapped count) the only message,
    /// and tens of thousands of backends leave a process probing them that no longer answers its clients or signals.
    /// </summary>
    internal const int MaxExpanded = 10_000;

    private const string FormatHelp =
        "ellipsis range must be provided in format {N...M} where N and M are positive integers, M must be greater than N";

    /// <summary>True when the item asks for expansion: it contains <c>...</c> or both braces.</summary>
    public static bool HasEllipses(string item) =>
        item.Contains("...", StringComparison.Ordinal) || (item.Contains('{') && item.Contains('}'));

    /// <summary>Expands one item; throws <see cref="FatalException"/> naming the item on a malformed range.</summary>
    public static IReadOnlyList<string> Expand(string item)
    {
        // Split into literal segments and ranges, left to right.
        var literals = new List<string>();
        var ranges = new List<string[]>();
        var rest = item;
        while (true)
        {
            var open = rest.IndexOf('{', StringComparison.Ordinal);
            if (open < 0)
            {
                break;
            }

            var close = rest.IndexOf('}', open);
            var dots = rest.IndexOf("...", open, StringComparison.Ordinal);
            if (close < 0 || dots < 0 || dots > close)
            {
                throw FormatError(item);
            }

            var start = rest[(open + 1)..dots];
            var end = rest[(dots + 3)..close];
            if (!IsBound(start) || !IsBound(end))
            {
                throw FormatError(item);
            }

            literals.Add(rest[..open]);
            ranges.Add(Range(item, start, end));
            rest = rest[(close + 1)..];
        }

        literals.Add(rest);
        if (ranges.Count == 0 || literals.Any(l => l.Contains('{') || l.Contains('}') || l.Contains("...", StringComparison.Ordinal)))
        {
            throw FormatError(item);
        }

        if (ranges.Aggregate(1L, (product, range) => Math.Min(product * range.Length, MaxExpanded + 1L)) > MaxExpanded)
        {
            throw TooMany(item);
        }

        // Cartesian product; the leftmost range varies fastest.
        var results = new List<string>();
        var indices = new int[ranges.Count];
        while (true)
        {
            var text = new System.Text.StringBuilder(literals[0]);
            for (var i = 0; i < ranges.Count; i++)
            {
                text.Append(ranges[i][indices[i]]).Append(literals[i + 1]);
            }

            results.Add(text.ToString());
            var position = 0;
            while (position < ranges.Count && ++indices[position] == ranges[position].Length)
            {
                indices[position++] = 0;
            }

            if (position == ranges.Count)
            {
                return results;
            }
        }
    }

    private static bool IsBound(string text) => text.All(c => char.IsAsciiDigit(c) || c is >= 'a' and <= 'z');

    private static string[] Range(string item, string start, string end)
    {
        var hex = false;
        if (!TryParse(start, ref hex, out var from) || !TryParse(end, ref hex, out var to))
        {
            var bad = TryParse(start, ref hex, out _) ? end : start;
            throw new FatalException($"unable to parse input arg {item}: invalid range bound \"{bad}\" (use decimal numbers or lowercase hex)");
        }

        if (from > to)
        {
            throw new FatalException($"unable to parse input arg {item}: incorrect range start {start} cannot be bigger than end {end}");
        }

        if (to - from >= MaxExpanded)
        {
            throw TooMany(item);
        }

        // Padding as upstream: a start written with a leading zero, or an end starting with zero.
        var pad = (start.Length > 1 && start[0] == '0') || end.StartsWith('0') ? end.Length : 0;
        var values = new string[to - from + 1];
        for (var i = 0; i < values.Length; i++)
        {
            var value = from + (ulong)i;
            var text = hex ? value.ToString("x", CultureInfo.InvariantCulture) : value.ToString(CultureInfo.InvariantCulture);
            values[i] = text.PadLeft(pad, '0');
        }

        return values;
    }

    private static FatalException TooMany(string item) =>
        new($"unable to parse input arg {item}: it expands to more than {MaxExpanded:N0} backends");

    private static bool TryParse(string text, ref bool hex, out ulong value)
    {
        if (ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value))
        {
            return true;
        }

        if (text.Length > 0 && text.All(c => char.IsAsciiDigit(c) || c is >= 'a' and <= 'f') &&
            ulong.TryParse(text, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value))
        {
            hex = true;
            return true;
        }

        return false;
    }

    private static FatalException FormatError(string item) => new($"invalid ellipsis format in ({item}), {FormatHelp}");
}
