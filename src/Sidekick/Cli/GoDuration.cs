using System.Globalization;

namespace Sidekick.Cli;

/// <summary>Go's <c>time.ParseDuration</c> syntax and <c>Duration.String()</c> format, as upstream flags use them.</summary>
internal static class GoDuration
{
    private const long TicksPerMicrosecond = 10;

    /// <summary>
    /// The longest wait .NET's timers take (2^32 - 2 ms, about 49.7 days). Go takes durations up to 292 years, so a
    /// setting such as <c>--shutdown-timeout 2000h</c> (drain for ever) is valid upstream; a longer one means "never"
    /// here too. Taken as it was, it made the timer that used it throw: the stop cut every request in flight, probes
    /// stopped for good, client connections closed unanswered.
    /// </summary>
    public static readonly TimeSpan LongestTimer = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

    /// <summary><paramref name="setting"/>, or <see cref="LongestTimer"/> when it is longer: what every timer a setting arms can take.</summary>
    public static TimeSpan ForTimers(TimeSpan setting) => setting > LongestTimer ? LongestTimer : setting;

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

            try
            {
                totalNanoseconds += number * scale.Value;
            }
            catch (OverflowException)
            {
                return false; // beyond any duration Go takes either
            }

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

    /// <summary>The longest text <see cref="Format(TimeSpan, Span{char})"/> writes.</summary>
    public const int MaxLength = 32;

    /// <summary>Formats like Go: <c>0s</c>, <c>1.5s</c>, <c>2m3s</c>, <c>10m0s</c>, <c>1h0m0s</c>, <c>1.234567ms</c>, <c>850µs</c>.</summary>
    public static string Format(TimeSpan duration)
    {
        Span<char> text = stackalloc char[MaxLength];
        return new string(text[..Format(duration, text)]);
    }

    /// <summary>
    /// <see cref="Format(TimeSpan)"/> into <paramref name="destination"/> (at least <see cref="MaxLength"/> long);
    /// returns the length. Integer arithmetic on ticks: each trace line prints a latency, and the decimal division and
    /// formatting this used to do cost more than the rest of the line.
    /// </summary>
    public static int Format(TimeSpan duration, Span<char> destination)
    {
        var ticks = duration.Ticks;
        if (ticks == 0)
        {
            "0s".CopyTo(destination);
            return 2;
        }

        var length = 0;
        if (ticks < 0)
        {
            destination[length++] = '-';
            ticks = -ticks;
        }

        if (ticks < TimeSpan.TicksPerSecond)
        {
            if (ticks < 10)
            {
                // Under a microsecond. TimeSpan.MinValue stays negative when negated and lands here too, as it always did.
                ((Int128)ticks * 100).TryFormat(destination[length..], out var written, provider: CultureInfo.InvariantCulture);
                return Unit(destination, length + written, "ns");
            }

            return ticks < 10_000
                ? Unit(destination, length + Fixed(ticks / 10, ticks % 10, 1, destination[length..]), "µs")
                : Unit(destination, length + Fixed(ticks / 10_000, ticks % 10_000, 4, destination[length..]), "ms");
        }

        var hours = ticks / TimeSpan.TicksPerHour;
        var minutes = ticks / TimeSpan.TicksPerMinute % 60;
        if (hours > 0)
        {
            hours.TryFormat(destination[length..], out var written, provider: CultureInfo.InvariantCulture);
            length = Unit(destination, length + written, "h");
        }

        if (hours > 0 || minutes > 0)
        {
            minutes.TryFormat(destination[length..], out var written, provider: CultureInfo.InvariantCulture);
            length = Unit(destination, length + written, "m");
        }

        var seconds = ticks % TimeSpan.TicksPerMinute;
        return Unit(destination, length + Fixed(seconds / TimeSpan.TicksPerSecond, seconds % TimeSpan.TicksPerSecond, 7, destination[length..]), "s");
    }

    /// <summary>Go's table and log style: rounded to microseconds first.</summary>
    public static string FormatRounded(TimeSpan duration) => Format(Rounded(duration));

    /// <summary><see cref="FormatRounded(TimeSpan)"/> into <paramref name="destination"/>; returns the length.</summary>
    public static int FormatRounded(TimeSpan duration, Span<char> destination) => Format(Rounded(duration), destination);

    private static TimeSpan Rounded(TimeSpan duration) =>
        TimeSpan.FromTicks((long)Math.Round((double)duration.Ticks / TicksPerMicrosecond, MidpointRounding.AwayFromZero) * TicksPerMicrosecond);

    /// <summary>
    /// <paramref name="integer"/>, then the <paramref name="digits"/>-wide <paramref name="fraction"/> without its
    /// trailing zeros (none at all when it is 0): what decimal's "0.#########" printed for these values.
    /// </summary>
    private static int Fixed(long integer, long fraction, int digits, Span<char> destination)
    {
        integer.TryFormat(destination, out var length, provider: CultureInfo.InvariantCulture);
        if (fraction == 0)
        {
            return length;
        }

        for (; fraction % 10 == 0; fraction /= 10)
        {
            digits--;
        }

        destination[length++] = '.';
        for (var i = digits - 1; i >= 0; i--, fraction /= 10)
        {
            destination[length + i] = (char)('0' + fraction % 10);
        }

        return length + digits;
    }

    private static int Unit(Span<char> destination, int length, string unit)
    {
        unit.CopyTo(destination[length..]);
        return length + unit.Length;
    }
}
