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
