using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>What an upload sends is read from the spool file, a range of it, as often as the store's client reads it.</summary>
public sealed class SpoolSliceTests : IDisposable
{
    private readonly string _path = Path.GetTempFileName();

    public void Dispose() => File.Delete(_path);

    [Fact]
    public async Task A_slice_reads_its_range_and_rewinds_for_a_second_read()
    {
        var data = Enumerable.Range(0, 10_000).Select(i => (byte)(i * 7)).ToArray();
        await File.WriteAllBytesAsync(_path, data);
        using var handle = File.OpenHandle(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.Asynchronous);
        await using var slice = new SpoolSlice(handle, 3_000, 5_000);

        Assert.Equal(5_000, slice.Length);
        using (var first = new MemoryStream())
        {
            await slice.CopyToAsync(first, 777); // reads in odd sizes
            Assert.Equal(data.AsSpan(3_000, 5_000).ToArray(), first.ToArray());
        }

        // The signer hashes the body, rewinds, and the client sends it.
        slice.Position = 0;
        using (var second = new MemoryStream())
        {
            slice.CopyTo(second);
            Assert.Equal(data.AsSpan(3_000, 5_000).ToArray(), second.ToArray());
        }

        Assert.Equal(0, await slice.ReadAsync(new byte[10]));
        Assert.Equal(4_990, slice.Seek(-10, SeekOrigin.End));
        var tail = new byte[100];
        Assert.Equal(10, await slice.ReadAsync(tail));
        Assert.Equal(data.AsSpan(7_990, 10).ToArray(), tail.AsSpan(0, 10).ToArray());
    }

    [Fact]
    public async Task Small_reads_are_served_from_the_read_ahead_in_any_order_and_size()
    {
        // A slice over two and a half read-ahead buffers, at an odd offset of the file.
        var data = Enumerable.Range(0, 800_000).Select(i => (byte)(i * 31 + (i >> 11))).ToArray();
        await File.WriteAllBytesAsync(_path, data);
        const int Start = 1_234;
        var length = SpoolSlice.ReadAhead * 5 / 2;
        var expected = data.AsSpan(Start, length).ToArray();
        using var handle = File.OpenHandle(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.Asynchronous);
        await using var slice = new SpoolSlice(handle, Start, length);

        // The signer: 4 KiB synchronous reads. The HTTP client: larger asynchronous ones, after a rewind.
        Assert.Equal(expected, ReadAll(slice, 4_096, async: false));
        slice.Position = 0;
        Assert.Equal(expected, ReadAll(slice, 8_192, async: true));
        slice.Position = 0;
        Assert.Equal(expected, ReadAll(slice, SpoolSlice.ReadAhead + 1, async: true));

        // Into the middle of the buffered window, then back before it, then across its end.
        foreach (var (position, count) in new[] { (SpoolSlice.ReadAhead + 100L, 5_000), (10L, 3), ((long)SpoolSlice.ReadAhead - 7, 20), (length - 5L, 5) })
        {
            slice.Position = position;
            var piece = new byte[count];
            var read = 0;
            while (read < count)
            {
                read += await slice.ReadAsync(piece.AsMemory(read));
            }

            Assert.Equal(expected.AsSpan((int)position, count).ToArray(), piece);
        }

        Assert.Equal(0, slice.Read(new byte[1]));
    }

    private static byte[] ReadAll(Stream stream, int size, bool async)
    {
        using var all = new MemoryStream();
        var buffer = new byte[size];
        int read;
        while ((read = async ? stream.ReadAsync(buffer).AsTask().GetAwaiter().GetResult() : stream.Read(buffer)) > 0)
        {
            all.Write(buffer, 0, read);
        }

        return all.ToArray();
    }

    [Fact]
    public async Task A_spool_file_shorter_than_the_slice_is_a_spool_failure_not_a_short_body()
    {
        await File.WriteAllBytesAsync(_path, new byte[1_000]);
        using var handle = File.OpenHandle(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.Asynchronous);
        await using var slice = new SpoolSlice(handle, 0, 2_000);

        var error = await Assert.ThrowsAnyAsync<IOException>(() => slice.CopyToAsync(Stream.Null));
        Assert.True(SpoolSlice.FailedIn(error));
        Assert.True(SpoolSlice.FailedIn(new InvalidOperationException("wrapped by the store's client", error)));
        Assert.False(SpoolSlice.FailedIn(new IOException("the store's connection was reset")));
    }
}
