using Sidekick.Cli;

namespace Sidekick.Tests.Cli;

public sealed class ByteSizeTests
{
    [Theory]
    [InlineData("64MB", 64_000_000L)]
    [InlineData("32MiB", 33_554_432L)]
    [InlineData("600000", 600_000L)]
    [InlineData("1.5GB", 1_500_000_000L)]
    [InlineData("1,000KB", 1_000_000L)]
    [InlineData("1 mib", 1_048_576L)]
    [InlineData("2k", 2_000L)]
    [InlineData("10b", 10L)]
    public void Parses_humanized_sizes(string text, long expected)
    {
        Assert.True(ByteSize.TryParse(text, out var bytes));
        Assert.Equal(expected, bytes);
    }

    [Theory]
    [InlineData("")]
    [InlineData("MB")]
    [InlineData("12 parsecs")]
    public void Rejects_bad_sizes(string text) => Assert.False(ByteSize.TryParse(text, out _));

    [Theory]
    [InlineData(0L, "0 B")]
    [InlineData(512L, "512 B")]
    [InlineData(1024L, "1.0 KiB")]
    [InlineData(12_288L, "12 KiB")]
    [InlineData(1_572_864L, "1.5 MiB")]
    public void Formats_iec(long bytes, string expected) => Assert.Equal(expected, ByteSize.FormatIec(bytes));
}
