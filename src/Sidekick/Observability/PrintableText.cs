using System.Buffers;
using System.Globalization;
using System.Text;

namespace Sidekick.Observability;

/// <summary>
/// Text from a request (its decoded path above all: <c>%0A</c> in the target is a line feed in the path), or quoted
/// from a backend or the store (an error's message), as it may appear in a text line of the output (a trace record,
/// a state line): every control character (C0, DEL, C1), the Unicode line and paragraph separators
/// and the bidirectional overrides and marks are written as <c>%XX</c> (<c>%uXXXX</c> above U+00FF). Printed as they were, a
/// client could end the line and forge the next one in the access log, or send escape sequences to the terminal
/// of the operator reading it. JSON lines need none of this: their writer escapes those characters itself.
/// </summary>
internal static class PrintableText
{
    private static readonly SearchValues<char> Unprintable = SearchValues.Create(
        string.Concat(Enumerable.Range(0, 0x20).Select(c => (char)c)) +
        string.Concat(Enumerable.Range(0x7F, 0x21).Select(c => (char)c)) +
        "\u2028\u2029\u202A\u202B\u202C\u202D\u202E\u2066\u2067\u2068\u2069" +
        // The marks that reorder what a terminal shows as the overrides do (the JSON writer escapes them too).
        "\u061C\u200E\u200F");

    /// <summary><paramref name="text"/> itself when it has nothing to escape (nearly always), else an escaped copy.</summary>
    public static string Of(string text) => text.AsSpan().IndexOfAny(Unprintable) < 0 ? text : Escape(text);

    private static string Escape(string text)
    {
        var escaped = new StringBuilder(text.Length + 16);
        foreach (var c in text)
        {
            if (!Unprintable.Contains(c))
            {
                escaped.Append(c);
            }
            else if (c <= '\u00FF')
            {
                escaped.Append('%').Append(((int)c).ToString("X2", CultureInfo.InvariantCulture));
            }
            else
            {
                escaped.Append("%u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
            }
        }

        return escaped.ToString();
    }
}
