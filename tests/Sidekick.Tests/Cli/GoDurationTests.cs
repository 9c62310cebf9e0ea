using Sidekick.Cli;

namespace Sidekick.Tests.Cli;

public sealed class GoDurationTests
{
    [Theory]
    [InlineData("5s", 5_000_000_000L)]
    [InlineData("1m30s", 90_000_000_000L)]
    [InlineData("1.5h", 5_400_000_000_000L)]
    [InlineData("250ms", 250_000_000L)]
    [InlineData("10us", 10_000L)]
    [InlineData("10µs", 10_000L)]
    [InlineData("10μs", 10_000L)]
    [InlineData("100ns", 100L)]
    [InlineData("-2s", -2_000_000_000L)]
    [InlineData("0", 0L)]
    [InlineData("1h2m3s4ms", 3_723_004_000_000L)]
    public void Parses_go_durations(string text, long nanoseconds)
    {
        Assert.True(GoDuration.TryParse(text, out var value));
        Assert.Equal(nanoseconds / 100, value.Ticks);
    }

    [Theory]
    [InlineData("5")]
    [InlineData("")]
    [InlineData("1d")]
    [InlineData("s")]
    [InlineData("1.s5")]
    [InlineData("5 s")]
    public void Rejects_invalid_durations(string text) => Assert.False(GoDuration.TryParse(text, out _));

    [Theory]
    [InlineData(0L, "0s")]
    [InlineData(15_000_000L, "1.5s")]
    [InlineData(1_230_000_000L, "2m3s")]
    [InlineData(6_000_000_000L, "10m0s")]
    [InlineData(36_000_000_000L, "1h0m0s")]
    [InlineData(12_345L, "1.2345ms")]
    [InlineData(8_500L, "850µs")]
    [InlineData(1L, "100ns")]
    [InlineData(-15_000_000L, "-1.5s")]
    public void Formats_like_go(long ticks, string expected) => Assert.Equal(expected, GoDuration.Format(TimeSpan.FromTicks(ticks)));

    [Fact]
    public void Rounded_format_drops_below_microseconds() =>
        Assert.Equal("1.235ms", GoDuration.FormatRounded(TimeSpan.FromTicks(12_346)));
}
