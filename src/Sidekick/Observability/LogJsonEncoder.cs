using System.Text.Encodings.Web;

namespace Sidekick.Observability;

/// <summary>
/// The encoder of sidekick's JSON lines: System.Text.Json's relaxed escaping (non-ASCII text stays readable, and C0,
/// C1, U+2028 and U+2029 are escaped), and the bidirectional formatting characters escaped too. Those come from the
/// client (a request path, a header) and reorder or hide what a terminal shows of the line around them (the "Trojan
/// Source" characters); the text lines escape them already (<see cref="PrintableText"/>).
/// </summary>
internal sealed class LogJsonEncoder : JavaScriptEncoder
{
    public static readonly LogJsonEncoder Instance = new();

    private static readonly JavaScriptEncoder Relaxed = UnsafeRelaxedJsonEscaping;

    private LogJsonEncoder()
    {
    }

    public override int MaxOutputCharactersPerInputCharacter => Math.Max(Relaxed.MaxOutputCharactersPerInputCharacter, 6);

    /// <summary>ALM, LRM and RLM, the embeddings and overrides (U+202A-202E) and the isolates (U+2066-2069).</summary>
    public static bool IsBidiControl(int scalar) =>
        scalar is 0x061C or 0x200E or 0x200F or (>= 0x202A and <= 0x202E) or (>= 0x2066 and <= 0x2069);

    public override bool WillEncode(int unicodeScalar) => IsBidiControl(unicodeScalar) || Relaxed.WillEncode(unicodeScalar);

    public override unsafe int FindFirstCharacterToEncode(char* text, int textLength)
    {
        var relaxed = Relaxed.FindFirstCharacterToEncode(text, textLength);
        var end = relaxed < 0 ? textLength : relaxed;
        for (var i = 0; i < end; i++)
        {
            // Every bidi control is in the Basic Multilingual Plane: one UTF-16 unit.
            if (IsBidiControl(text[i]))
            {
                return i;
            }
        }

        return relaxed;
    }

    public override unsafe bool TryEncodeUnicodeScalar(int unicodeScalar, char* buffer, int bufferLength, out int numberOfCharactersWritten)
    {
        if (!IsBidiControl(unicodeScalar))
        {
            return Relaxed.TryEncodeUnicodeScalar(unicodeScalar, buffer, bufferLength, out numberOfCharactersWritten);
        }

        const string Hex = "0123456789ABCDEF";
        if (bufferLength < 6)
        {
            numberOfCharactersWritten = 0;
            return false;
        }

        buffer[0] = '\\';
        buffer[1] = 'u';
        buffer[2] = Hex[(unicodeScalar >> 12) & 0xF];
        buffer[3] = Hex[(unicodeScalar >> 8) & 0xF];
        buffer[4] = Hex[(unicodeScalar >> 4) & 0xF];
        buffer[5] = Hex[unicodeScalar & 0xF];
        numberOfCharactersWritten = 6;
        return true;
    }
}
