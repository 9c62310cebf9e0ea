using System.Globalization;

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

    /// <summary>IEC units like go-humanize IBytes: <c>0 B</c>, <c>512 B</c>, <c>1.0 KiB</c>, <c>12 KiB</c>, <c>1.5 MiB</c>.</summary>
    public static string FormatIec(long bytes)
    {
        if (bytes < 10)
        {
            return $"{bytes} B";
        }

        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        var exponent = (int)Math.Floor(Math.Log(bytes) / Math.Log(1024));
        var value = Math.Floor(bytes / Math.Pow(1024, exponent) * 10 + 0.5) / 10;
        return value < 10
            ? string.Create(CultureInfo.InvariantCulture, $"{value:0.0} {units[exponent]}")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0} {units[exponent]}");
    }
}
