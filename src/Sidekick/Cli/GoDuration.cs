using System.Globalization;
using System.Text;

namespace Sidekick.Cli;

/// <summary>Go's <c>time.ParseDuration</c> syntax and <c>Duration.String()</c> format, as upstream flags use them.</summary>
internal static class GoDuration
{
    private const long TicksPerMicrosecond = 10;

    /// <summary>Parses e.g. <c>5s</c>, <c>1m30s</c>, <c>1.5h</c>, <c>250ms</c>, <c>-2s</c> or <c>0</c>; a bare number other than 0 is invalid.</summary>
    public static bool TryParse(string text, out TimeSpan value)
    {
        value = TimeSpan.Zero;
        var s = text.AsSpan();
        var negative = false;
        if (s.Length > 0 && (s[0] == '-' || s[0] == '+'))
        {
            negative = s[0] == '-';
            s = s[1..];
        }

        if (s is "0")
        {
            return true;
        }

        if (s.IsEmpty)
        {
            return false;
        }

        decimal totalNanoseconds = 0;
        while (!s.IsEmpty)
        {
            var numberLength = 0;
            while (numberLength < s.Length && (char.IsAsciiDigit(s[numberLength]) || s[numberLength] == '.'))
            {
                numberLength++;
            }

            if (numberLength == 0 || s[..numberLength] is "." ||
                !decimal.TryParse(s[..numberLength], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
            {
                return false;
            }

            s = s[numberLength..];
            var unitLength = 0;
            while (unitLength < s.Length && !char.IsAsciiDigit(s[unitLength]) && s[unitLength] != '.')
            {
                unitLength++;
            }

            decimal? scale = s[..unitLength] switch
            {
                "ns" => 1m,
                "us" or "µs" or "μs" => 1_000m,
                "ms" => 1_000_000m,
                "s" => 1_000_000_000m,
                "m" => 60_000_000_000m,
                "h" => 3_600_000_000_000m,
                _ => null,
            };
            if (scale is null)
            {
                return false;
            }

            totalNanoseconds += number * scale.Value;
            s = s[unitLength..];
        }

        if (totalNanoseconds / 100 > long.MaxValue)
        {
            return false;
        }

        var ticks = (long)(totalNanoseconds / 100);
        value = TimeSpan.FromTicks(negative ? -ticks : ticks);
        return true;
    }

    /// <summary>Formats like Go: <c>0s</c>, <c>1.5s</c>, <c>2m3s</c>, <c>10m0s</c>, <c>1h0m0s</c>, <c>1.234567ms</c>, <c>850µs</c>.</summary>
    public static string Format(TimeSpan duration)
    {
        var ticks = duration.Ticks;
        if (ticks == 0)
        {
            return "0s";
        }

        var builder = new StringBuilder();
        if (ticks < 0)
        {
            builder.Append('-');
            ticks = -ticks;
        }

        var nanoseconds = (decimal)ticks * 100;
        if (ticks < TimeSpan.TicksPerSecond)
        {
            var (scale, unit) = nanoseconds switch
            {
                < 1_000m => (1m, "ns"),
                < 1_000_000m => (1_000m, "µs"),
                _ => (1_000_000m, "ms"),
            };
            return builder.Append(Trim(nanoseconds / scale)).Append(unit).ToString();
        }

        var hours = ticks / TimeSpan.TicksPerHour;
        var minutes = ticks / TimeSpan.TicksPerMinute % 60;
        var seconds = (decimal)(ticks % TimeSpan.TicksPerMinute) / TimeSpan.TicksPerSecond;
        if (hours > 0)
        {
            builder.Append(hours).Append('h');
        }

        if (hours > 0 || minutes > 0)
        {
            builder.Append(minutes).Append('m');
        }

        return builder.Append(Trim(seconds)).Append('s').ToString();
    }

    /// <summary>Go's table and log style: rounded to microseconds first.</summary>
    public static string FormatRounded(TimeSpan duration) =>
        Format(TimeSpan.FromTicks((long)Math.Round((double)duration.Ticks / TicksPerMicrosecond, MidpointRounding.AwayFromZero) * TicksPerMicrosecond));

    private static string Trim(decimal value) =>
        value.ToString("0.#########", CultureInfo.InvariantCulture);
}
