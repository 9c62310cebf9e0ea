using Microsoft.Extensions.Time.Testing;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>The direct spool writers' large buffers are kept from one fill to the next, within a bound, and let go when idle.</summary>
public sealed class SpoolBufferPoolTests : IDisposable
{
    private const int Large = DirectBufferBudget.LargeBufferSize;
    private readonly FakeTimeProvider _time = new();
    private readonly SpoolBufferPool _pool;

    public SpoolBufferPoolTests() => _pool = new SpoolBufferPool(capacity: 2, _time);

    public void Dispose() => _pool.Dispose();

    [Fact]
    public void A_large_buffer_given_back_is_the_next_one_handed_out_aligned_to_a_huge_page()
    {
        var first = _pool.Rent(Large);
        Assert.Equal(0, first % Large); // where one huge page can back it whole (and O_DIRECT's 4 KiB, a fortiori)
        Touch(first, Large);
        _pool.Return(first, Large);

        var second = _pool.Rent(Large);

        Assert.Equal(first, second);
        Assert.Equal(0, _pool.Kept);
        _pool.Return(second, Large);
    }

    [Fact]
    public void Small_buffers_are_not_kept()
    {
        var small = _pool.Rent(DirectBufferBudget.SmallBufferSize);
        Assert.Equal(0, small % SpoolBufferPool.Alignment);
        Touch(small, DirectBufferBudget.SmallBufferSize);

        _pool.Return(small, DirectBufferBudget.SmallBufferSize);

        Assert.Equal(0, _pool.Kept);
    }

    [Fact]
    public void No_more_than_its_capacity_is_kept()
    {
        var buffers = Enumerable.Range(0, 3).Select(_ => _pool.Rent(Large)).ToArray();

        foreach (var buffer in buffers)
        {
            _pool.Return(buffer, Large);
        }

        Assert.Equal(2, _pool.Kept);
    }

    [Fact]
    public void The_buffers_are_freed_once_none_came_back_for_the_spool_linger_and_not_before()
    {
        var a = _pool.Rent(Large);
        var b = _pool.Rent(Large);
        _pool.Return(a, Large);
        _time.Advance(SpoolFiles.Linger - TimeSpan.FromSeconds(1));
        Assert.Equal(1, _pool.Kept);

        // A buffer coming back puts the trim off: both stay for a whole Linger after it.
        _pool.Return(b, Large);
        _time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(2, _pool.Kept);
        _time.Advance(SpoolFiles.Linger - TimeSpan.FromSeconds(3));
        Assert.Equal(2, _pool.Kept);

        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(0, _pool.Kept);
    }

    [Fact]
    public void Buffers_given_back_after_dispose_are_freed_not_kept()
    {
        var buffer = _pool.Rent(Large);
        _pool.Dispose();

        _pool.Return(buffer, Large);

        Assert.Equal(0, _pool.Kept);
    }

    /// <summary>Writes every page, as a fill's copy does: a buffer that is not that long fails here.</summary>
    private static void Touch(nint buffer, int length) => System.Runtime.InteropServices.Marshal.Copy(new byte[length], 0, buffer, length);
}
