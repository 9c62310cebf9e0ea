using System.Globalization;
using System.Numerics;

namespace Sidekick.Cli;

/// <summary>
/// Human byte sizes with go-humanize semantics (what upstream's SIDEKICK_CACHE_MIN_SIZE used):
/// <c>64MB</c> = 64,000,000, <c>32MiB</c> = 33,554,432, <c>1,000KB</c>, <c>1.5 GB</c>, case-insensitive.
/// </summary>
internal static class ByteSize
{
    public static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        var s = text.AsSpan().Trim();
        var end = 0;
        while (end < s.Length && (char.IsAsciiDigit(s[end]) || s[end] is '.' or ','))
        {
            end++;
        }

        var number = s[..end].ToString().Replace(",", "", StringComparison.Ordinal);
        if (number.Length == 0 || !decimal.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var value))
        {
            return false;
        }

        decimal? multiplier = s[end..].Trim().ToString().ToLowerInvariant() switch
        {
            "" or "b" => 1m,
            "k" or "kb" => 1e3m,
            "ki" or "kib" => 1024m,
            "m" or "mb" => 1e6m,
            "mi" or "mib" => 1024m * 1024,
            "g" or "gb" => 1e9m,
            "gi" or "gib" => 1024m * 1024 * 1024,
            "t" or "tb" => 1e12m,
            "ti" or "tib" => 1024m * 1024 * 1024 * 1024,
            "p" or "pb" => 1e15m,
            "pi" or "pib" => 1024m * 1024 * 1024 * 1024 * 1024,
            _ => null,
        };
        if (multiplier is null)
        {
            return false;
        }

        var result = decimal.Truncate(value * multiplier.Value);
        if (result > long.MaxValue)
        {
            return false;
        }

        bytes = (long)result;
        return true;
    }

    /// <summary>The longest text <see cref="FormatIec(long, Span{char})"/> writes (<c>-9223372036854775808 B</c>).</summary>
    public const int MaxIecLength = 24;

    private static readonly string[] IecUnits = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

    /// <summary>IEC units like go-humanize IBytes: <c>0 B</c>, <c>512 B</c>, <c>1.0 KiB</c>, <c>12 KiB</c>, <c>1.5 MiB</c>.</summary>
    public static string FormatIec(long bytes)
    {
        Span<char> text = stackalloc char[MaxIecLength];
        return new string(text[..FormatIec(bytes, text)]);
    }

    /// <summary>
    /// <see cref="FormatIec(long)"/> into <paramref name="destination"/> (at least <see cref="MaxIecLength"/> long);
    /// returns the length. The rounded value is printed as an integer of tenths: a trace line prints two sizes, and
    /// formatting a double with "0.0" was three quarters of each one's cost.
    /// </summary>
    public static int FormatIec(long bytes, Span<char> destination)
    {
        int length;
        if (bytes < 10)
        {
            bytes.TryFormat(destination, out length, provider: CultureInfo.InvariantCulture);
            return Unit(destination, length, "B");
        }

        // The unit from the bit length; go-humanize's floating-point steps (floor(log(b) / log(1024))) only next to a
        // power of 1024, where their rounding can put a size one unit lower: so sizes there print as they always did,
        // and the others skip two calls into libm (a trace line prints two sizes).
        var exponent = (63 - BitOperations.LeadingZeroCount((ulong)bytes)) / 10;
        if (NearPowerOf1024(bytes, exponent))
        {
            exponent = (int)Math.Floor(Math.Log(bytes) / Log1024);
        }

        var tenths = (long)Math.Floor(bytes / IecPowers[exponent] * 10 + 0.5);
        if (tenths < 100)
        {
            // Under 10: one decimal ("0.0").
            destination[0] = (char)('0' + tenths / 10);
            destination[1] = '.';
            destination[2] = (char)('0' + tenths % 10);
            length = 3;
        }
        else
        {
            // Else a whole number ("0"), rounded half away from zero as the format did.
            ((tenths + 5) / 10).TryFormat(destination, out length, provider: CultureInfo.InvariantCulture);
        }

        return Unit(destination, length, IecUnits[exponent]);
    }

    // Math.Log(1024), and Math.Pow(1024, n) for each unit: powers of two, so exact as doubles, as Math.Pow returns them.
    private static readonly double Log1024 = Math.Log(1024);
    private static readonly double[] IecPowers = [1, 1L << 10, 1L << 20, 1L << 30, 1L << 40, 1L << 50, 1L << 60];

    /// <summary>
    /// Whether <paramref name="bytes"/> lies within 2^-36 of its own unit's power of 1024 or the next one: there the
    /// floating-point quotient (a few parts in 10^15 off) may fall on the other side of the boundary; farther away it
    /// cannot.
    /// </summary>
    private static bool NearPowerOf1024(long bytes, int exponent)
    {
        var power = 1L << (10 * exponent);
        if (bytes - power <= Math.Max(2, power >> 36))
        {
            return true;
        }

        // 1024^7 is past long.MaxValue: an exabyte-unit size has no next boundary.
        return exponent < 6 && (power << 10) - bytes <= Math.Max(2, power >> 26);
    }

    private static int Unit(Span<char> destination, int length, string unit)
    {
        destination[length++] = ' ';
        unit.CopyTo(destination[length..]);
        return length + unit.Length;
    }
}
