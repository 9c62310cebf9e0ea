namespace Sidekick.Forwarding;

/// <summary>How many attempts a request may make and the budget that keeps retries from multiplying load.</summary>
internal sealed class RetryPolicy(int maxAttempts, long maxReplayBytes, RetryBudget budget, long? replayBudgetBytes = null)
{
    public int MaxAttempts { get; } = maxAttempts;

    /// <summary>Largest idempotent request body buffered so it can be replayed on another backend.</summary>
    public long MaxReplayBytes { get; } = maxReplayBytes;

    /// <summary>The bytes all replay buffers may hold at once (<see cref="Forwarding.ReplayBudget.DefaultBytes"/> unless a test sets it).</summary>
    public ReplayBudget ReplayBudget { get; } = ReplayBudget.For(maxReplayBytes, replayBudgetBytes);

    public RetryBudget Budget { get; } = budget;

    /// <summary>Retries made so far.</summary>
    public Counter Count { get; } = new();

    /// <summary>Downloads continued from another backend after a mid-body failure, by outcome.</summary>
    public ResumeCounters Resumes { get; } = new();

    internal sealed class Counter
    {
        private long _value;

        public long Value => Volatile.Read(ref _value);

        public void Add(long amount) => Interlocked.Add(ref _value, amount);
    }
}
