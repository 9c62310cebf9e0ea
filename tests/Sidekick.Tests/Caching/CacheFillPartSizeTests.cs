using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>A fill's multipart upload never needs more parts than S3 takes (10,000), whatever the body's length.</summary>
public sealed class CacheFillPartSizeTests
{
    private const int MiB = 1024 * 1024;

    [Theory]
    [InlineData(64L * MiB, 5 * MiB, 5 * MiB)]
    [InlineData(1024L * MiB, 8 * MiB, 8 * MiB)]
    [InlineData(10_000L * 5 * MiB, 5 * MiB, 5 * MiB)] // exactly 10,000 parts: the configured size still fits
    [InlineData(10_000L * 5 * MiB + 1, 5 * MiB, 6 * MiB)] // one byte more: the next whole MiB
    [InlineData(100L * 1024 * MiB, 5 * MiB, 11 * MiB)] // 100 GiB
    [InlineData(5L * 1024 * 1024 * MiB, 5 * MiB, 525 * MiB)] // 5 TiB, S3's largest object
    [InlineData(100L * 1024 * MiB, 64 * MiB, 64 * MiB)] // a larger configured size is kept
    public void The_part_size_fits_the_body_in_at_most_ten_thousand_parts(long length, int configured, int expected)
    {
        var size = CacheFill.PartSizeFor(length, configured);

        Assert.Equal(expected, size);
        Assert.True((length + size - 1) / size <= CacheFill.MaxParts, $"{(length + size - 1) / size} parts");
    }
}
