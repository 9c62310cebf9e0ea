using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;
using Sidekick.Forwarding;

namespace Sidekick.Tests.Forwarding;

public sealed class SharedPoolValueTaskBuilderTests
{
    [Fact]
    public async Task Results_and_exceptions_come_through_whether_the_method_completes_at_once_or_later()
    {
        Assert.Equal(42, await AddOneAsync(41, yieldFirst: false));
        Assert.Equal(42, await AddOneAsync(41, yieldFirst: true));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await FailAsync(yieldFirst: false));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await FailAsync(yieldFirst: true));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await FailWithoutResultAsync());

        var asyncLocal = new AsyncLocal<string> { Value = "flows" };
        Assert.Equal("flows", await ReadAfterYieldAsync(asyncLocal));
    }

    [Fact]
    public void A_method_that_waits_takes_its_box_from_the_pool_once_warm()
    {
        // The gate completes on this thread, so every allocation of the loop is counted here.
        var gate = new Gate();
        double perCall;
        using (new NoSynchronizationContext())
        {
            for (var i = 0; i < 10; i++)
            {
                Run(gate, i);
            }

            var before = GC.GetAllocatedBytesForCurrentThread();
            for (var i = 0; i < 1000; i++)
            {
                Run(gate, i);
            }

            perCall = (GC.GetAllocatedBytesForCurrentThread() - before) / 1000.0;
        }

        // Without the pool each call allocates its box (the state machine and the task's source, >100 bytes).
        Assert.True(perCall < 8, $"{perCall:F1} bytes allocated per call");

        // Checked without Assert, which allocates.
        static void Run(Gate gate, int i)
        {
            var pending = AddAfterGateAsync(gate, i);
            var waited = !pending.IsCompleted;
            gate.Open();
            if (!waited || pending.Result != i + 1)
            {
                throw new InvalidOperationException($"call {i}: waited {waited}");
            }
        }
    }

    [Fact]
    public void Reading_a_result_twice_fails_without_disturbing_the_call_that_reuses_its_box()
    {
        using var inline = new NoSynchronizationContext();
        var gate = new Gate();
        var first = AddAfterGateAsync(gate, 1);
        gate.Open();
        Assert.Equal(2, ReadCompleted(first));

        // The same box serves the next call; the first task's token no longer matches it, and reading the
        // first task again fails without disturbing the second.
        var second = AddAfterGateAsync(gate, 5);
        Assert.Throws<InvalidOperationException>(() => ReadCompleted(first));
        gate.Open();
        Assert.Equal(6, ReadCompleted(second));

        static int ReadCompleted(ValueTask<int> task)
        {
            Assert.True(task.IsCompleted);
            return task.Result;
        }
    }

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder<>))]
    private static async ValueTask<int> AddOneAsync(int value, bool yieldFirst)
    {
        if (yieldFirst)
        {
            await Task.Yield();
        }

        return value + 1;
    }

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder<>))]
    private static async ValueTask<int> FailAsync(bool yieldFirst)
    {
        if (yieldFirst)
        {
            await Task.Yield();
        }

        throw new InvalidOperationException("failed");
    }

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder))]
    private static async ValueTask FailWithoutResultAsync()
    {
        await Task.Delay(1);
        throw new InvalidOperationException("failed");
    }

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder<>))]
    private static async ValueTask<string?> ReadAfterYieldAsync(AsyncLocal<string> local)
    {
        await Task.Delay(1);
        return local.Value;
    }

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder<>))]
    private static async ValueTask<int> AddAfterGateAsync(Gate gate, int value)
    {
        await gate.WaitAsync();
        return value + 1;
    }

    /// <summary>
    /// Without the test framework's synchronization context, a continuation runs inline where the awaited
    /// operation completes, as on the server's threads.
    /// </summary>
    private sealed class NoSynchronizationContext : IDisposable
    {
        private readonly SynchronizationContext? _saved = SynchronizationContext.Current;

        public NoSynchronizationContext() => SynchronizationContext.SetSynchronizationContext(null);

        public void Dispose() => SynchronizationContext.SetSynchronizationContext(_saved);
    }

    /// <summary>An awaitable the test opens itself: the continuation runs inline, on the test's thread.</summary>
    private sealed class Gate : IValueTaskSource
    {
        private ManualResetValueTaskSourceCore<bool> _source;

        public ValueTask WaitAsync() => new(this, _source.Version);

        public void Open() => _source.SetResult(true);

        public void GetResult(short token)
        {
            _source.GetResult(token);
            _source.Reset();
        }

        public ValueTaskSourceStatus GetStatus(short token) => _source.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _source.OnCompleted(continuation, state, token, flags);
    }
}
