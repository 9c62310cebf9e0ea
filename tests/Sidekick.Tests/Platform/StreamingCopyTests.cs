using Sidekick.Platform;

namespace Sidekick.Tests.Platform;

public sealed class StreamingCopyTests
{
    public static TheoryData<int> Lengths => [0, 1, 255, 256, 257, 4096 + 63, 64 * 1024 + 13, 2 * 1024 * 1024];

    [Theory]
    [MemberData(nameof(Lengths))]
    public void Copies_every_byte_at_every_alignment_of_the_destination_and_nothing_around_it(int length)
    {
        const byte Guard = 0xA5;
        var source = new byte[length + 16];
        Random.Shared.NextBytes(source);
        for (var sourceOffset = 0; sourceOffset < 16; sourceOffset += 7)
        {
            for (var offset = 0; offset < 16; offset++)
            {
                var destination = new byte[length + 64];
                Array.Fill(destination, Guard);
                var copied = source.AsSpan(sourceOffset, length);

                StreamingCopy.Copy(copied, destination.AsSpan(offset + 16));

                Assert.True(copied.SequenceEqual(destination.AsSpan(offset + 16, length)), $"bytes differ: length {length}, offset {offset}");
                Assert.All(destination[..(offset + 16)], b => Assert.Equal(Guard, b));
                Assert.All(destination[(offset + 16 + length)..], b => Assert.Equal(Guard, b));
            }
        }
    }

    [Fact]
    public void Refuses_a_destination_shorter_than_the_source() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => StreamingCopy.Copy(new byte[300], new byte[299]));
}
