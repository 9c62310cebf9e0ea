namespace Sidekick.Forwarding;

/// <summary>
/// Caps retries to a share of recent traffic plus a small floor per second (the Linkerd/Envoy idea), so a
/// failing cluster cannot turn every request into several. Lock-free token bucket in fixed-point units.
/// </summary>
internal sealed class RetryBudget(double ratio, int minPerSecond, TimeProvider time)
{
    private const long Unit = 1000;
    private readonly long _deposit = (long)(ratio * Unit);
    private readonly long _cap = Math.Max(minPerSecond, 10) * Unit * 10;
    private long _tokens = Math.Max(minPerSecond, 1) * Unit;
    private long _lastRefill = time.GetTimestamp();

    /// <summary>Called once per proxied request: earns a fraction of a retry.</summary>
    public void OnRequest()
    {
        if (_deposit > 0)
        {
            Add(_deposit);
        }
    }

    /// <summary>Takes one retry from the budget; false when it is spent.</summary>
    public bool TryWithdraw()
    {
        Refill();
        while (true)
        {
            var tokens = Volatile.Read(ref _tokens);
            if (tokens < Unit)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _tokens, tokens - Unit, tokens) == tokens)
            {
                return true;
            }
        }
    }

    private void Refill()
    {
        var last = Volatile.Read(ref _lastRefill);
        var now = time.GetTimestamp();
        var elapsed = time.GetElapsedTime(last, now);
        if (elapsed < TimeSpan.FromMilliseconds(100) || Interlocked.CompareExchange(ref _lastRefill, now, last) != last)
        {
            return;
        }

        Add((long)(elapsed.TotalSeconds * minPerSecond * Unit));
    }

    private void Add(long amount)
    {
        while (true)
        {
            var tokens = Volatile.Read(ref _tokens);
            var next = Math.Min(_cap, tokens + amount);
            if (Interlocked.CompareExchange(ref _tokens, next, tokens) == tokens)
            {
                return;
            }
        }
    }
}
