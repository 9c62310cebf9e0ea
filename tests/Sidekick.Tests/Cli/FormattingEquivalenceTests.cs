using System.Globalization;
using System.Text;
using Sidekick.Cli;

namespace Sidekick.Tests.Cli;

/// <summary>
/// <see cref="ByteSize.FormatIec(long)"/> and <see cref="GoDuration.Format"/> were rewritten without floating-point
/// and decimal formatting for the trace lines (issue #27): they must print exactly what the versions below, the
/// ones before, printed.
/// </summary>
public sealed class FormattingEquivalenceTests
{
    public static TheoryData<long> Sizes()
    {
        var data = new TheoryData<long> { long.MaxValue, long.MinValue, -1, -10, 0 };
        for (var exponent = 1; exponent <= 6; exponent++)
        {
            var power = 1L << (10 * exponent);
            foreach (var around in new[] { power - 1, power, power + 1, power * 10 - 1, power * 10, power * 10 + 1, power / 20 * 19, power / 20 * 21, power * 1023, power * 1024 - 1 })
            {
                if (around > 0)
                {
                    data.Add(around);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void Iec_sizes_print_as_before_at_the_edges(long bytes) => Assert.Equal(OldIec(bytes), ByteSize.FormatIec(bytes));

    [Fact]
    public void Iec_sizes_print_as_before_everywhere_else()
    {
        for (long bytes = -100; bytes < 300_000; bytes++)
        {
            Assert.Equal(OldIec(bytes), ByteSize.FormatIec(bytes));
        }

        var random = new Random(27);
        for (var i = 0; i < 300_000; i++)
        {
            // Evenly spread over the magnitudes, not only the large ones.
            var bytes = (long)Math.Pow(2, random.NextDouble() * 63);
            Assert.Equal(OldIec(bytes), ByteSize.FormatIec(bytes));
        }
    }

    public static TheoryData<long> Durations() => new()
    {
        0, 1, 9, 10, 11, 99, 100, 9_999, 10_000, 10_001, 12_340, 9_999_999, 10_000_000, 10_000_001, 15_000_000,
        TimeSpan.TicksPerMinute - 1, TimeSpan.TicksPerMinute, TimeSpan.TicksPerMinute + 1, TimeSpan.TicksPerHour - 1, TimeSpan.TicksPerHour,
        TimeSpan.TicksPerHour + 1, TimeSpan.TicksPerDay * 400 + 12_345, long.MaxValue, long.MinValue, long.MinValue + 1, -1, -10_000_000,
    };

    [Theory]
    [MemberData(nameof(Durations))]
    public void Durations_print_as_before_at_the_edges(long ticks)
    {
        Assert.Equal(OldDuration(TimeSpan.FromTicks(ticks)), GoDuration.Format(TimeSpan.FromTicks(ticks)));
        if (ticks is > long.MinValue / 2 and < long.MaxValue / 2)
        {
            Assert.Equal(OldRounded(TimeSpan.FromTicks(ticks)), GoDuration.FormatRounded(TimeSpan.FromTicks(ticks)));
        }
    }

    [Fact]
    public void Durations_print_as_before_everywhere_else()
    {
        for (long ticks = -20_000; ticks < 300_000; ticks++)
        {
            Assert.Equal(OldDuration(TimeSpan.FromTicks(ticks)), GoDuration.Format(TimeSpan.FromTicks(ticks)));
            Assert.Equal(OldRounded(TimeSpan.FromTicks(ticks)), GoDuration.FormatRounded(TimeSpan.FromTicks(ticks)));
        }

        var random = new Random(27);
        for (var i = 0; i < 300_000; i++)
        {
            var ticks = (long)Math.Pow(2, random.NextDouble() * 55) * (random.Next(2) == 0 ? 1 : -1);
            Assert.Equal(OldDuration(TimeSpan.FromTicks(ticks)), GoDuration.Format(TimeSpan.FromTicks(ticks)));
            Assert.Equal(OldRounded(TimeSpan.FromTicks(ticks)), GoDuration.FormatRounded(TimeSpan.FromTicks(ticks)));
        }
    }

    // ByteSize.FormatIec before issue #27.
    private static string OldIec(long bytes)
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

    // GoDuration.Format and FormatRounded before issue #27.
    private static string OldDuration(TimeSpan duration)
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

    private static string OldRounded(TimeSpan duration) =>
        OldDuration(TimeSpan.FromTicks((long)Math.Round((double)duration.Ticks / 10, MidpointRounding.AwayFromZero) * 10));

    private static string Trim(decimal value) => value.ToString("0.#########", CultureInfo.InvariantCulture);
}
