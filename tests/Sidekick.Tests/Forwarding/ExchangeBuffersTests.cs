using Sidekick.Forwarding.Http1;

namespace Sidekick.Tests.Forwarding;

public sealed class ExchangeBuffersTests
{
    [Fact]
    public void A_thread_gets_back_the_buffers_it_returned_last_first_and_never_one_twice()
    {
        // A thread of its own: the free list is per thread, and the test's thread may have used it before.
        RunOnNewThread(() =>
        {
            var a = ExchangeBuffers.Rent();
            var b = ExchangeBuffers.Rent();
            Assert.Equal(ExchangeBuffers.Size, a.Length);
            Assert.NotSame(a, b);
            ExchangeBuffers.Return(a);
            ExchangeBuffers.Return(b);
            Assert.Same(b, ExchangeBuffers.Rent());
            Assert.Same(a, ExchangeBuffers.Rent());
            Assert.NotSame(a, ExchangeBuffers.Rent());
        });
    }

    [Fact]
    public void The_free_list_is_bounded_and_other_sizes_go_to_the_shared_pool()
    {
        RunOnNewThread(() =>
        {
            var returned = Enumerable.Range(0, 40).Select(_ => ExchangeBuffers.Rent()).ToList();
            returned.ForEach(ExchangeBuffers.Return);
            Assert.Equal(32, ExchangeBuffers.KeptOnThisThread);
            var kept = Enumerable.Range(0, 40).Select(_ => ExchangeBuffers.Rent()).ToList();
            // 32 kept here; the 8 beyond went to the shared pool (which may or may not hand them out again).
            Assert.Equal(32, kept.Take(32).Count(returned.Contains));
            Assert.Equal(40, kept.Distinct().Count());
            Assert.Equal(0, ExchangeBuffers.KeptOnThisThread);

            var large = new byte[2 * ExchangeBuffers.Size];
            ExchangeBuffers.Return(large);
            Assert.Equal(0, ExchangeBuffers.KeptOnThisThread);
            Assert.All(Enumerable.Range(0, 5).Select(_ => ExchangeBuffers.Rent()), b => Assert.Equal(ExchangeBuffers.Size, b.Length));
        });
    }

    private static void RunOnNewThread(Action action)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                action();
            }
            catch (Exception ex)
            {
                failure = ex;
            }
        });
        thread.Start();
        thread.Join();
        if (failure is not null)
        {
            throw new Xunit.Sdk.XunitException(failure.ToString());
        }
    }
}
