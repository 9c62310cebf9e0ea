namespace Sidekick.Topology;

/// <summary>
/// Per-backend counters, updated lock-free from the request path and the prober.
/// They live on the <see cref="Backend"/> so they survive topology swaps for unchanged endpoints.
/// </summary>
internal sealed class BackendStats
{
    private long _calls;
    private long _failures;
    private long _rxBytes;
    private long _txBytes;
    private long _minLatencyTicks = long.MaxValue;
    private long _maxLatencyTicks;
    private long _healthErrors;

    public long Calls => Volatile.Read(ref _calls);
    public long Failures => Volatile.Read(ref _failures);
    public long RxBytes => Volatile.Read(ref _rxBytes);
    public long TxBytes => Volatile.Read(ref _txBytes);
    public long HealthErrors => Volatile.Read(ref _healthErrors);

    /// <summary>Smallest latency seen, or zero before the first call.</summary>
    public TimeSpan MinLatency
    {
        get
        {
            var ticks = Volatile.Read(ref _minLatencyTicks);
            return ticks == long.MaxValue ? TimeSpan.Zero : TimeSpan.FromTicks(ticks);
        }
    }

    public TimeSpan MaxLatency => TimeSpan.FromTicks(Volatile.Read(ref _maxLatencyTicks));

    /// <summary>Counts one finished call (proxied request or probe that got a response).</summary>
    public void RecordCall(int statusCode, TimeSpan latency, long rxBytes, long txBytes)
    {
        Interlocked.Increment(ref _calls);
        if (statusCode >= 400)
        {
            Interlocked.Increment(ref _failures);
        }

        if (rxBytes != 0)
        {
            Interlocked.Add(ref _rxBytes, rxBytes);
        }

        if (txBytes != 0)
        {
            Interlocked.Add(ref _txBytes, txBytes);
        }

        var ticks = latency.Ticks;
        long seen;
        while (ticks < (seen = Volatile.Read(ref _minLatencyTicks)) &&
               Interlocked.CompareExchange(ref _minLatencyTicks, ticks, seen) != seen)
        {
        }

        while (ticks > (seen = Volatile.Read(ref _maxLatencyTicks)) &&
               Interlocked.CompareExchange(ref _maxLatencyTicks, ticks, seen) != seen)
        {
        }
    }

    /// <summary>Counts a failed probe (transport error, timeout or non-200 status).</summary>
    public void RecordHealthError() => Interlocked.Increment(ref _healthErrors);
}
