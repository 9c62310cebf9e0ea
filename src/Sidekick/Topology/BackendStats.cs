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
    private long _healthyProbes;
    private readonly long[] _responseClasses = new long[5];

    public long Calls => Volatile.Read(ref _calls);
    public long Failures => Volatile.Read(ref _failures);
    public long RxBytes => Volatile.Read(ref _rxBytes);
    public long TxBytes => Volatile.Read(ref _txBytes);
    public long HealthErrors => Volatile.Read(ref _healthErrors);

    /// <summary>Probes answered 200 (the failed ones are <see cref="HealthErrors"/>).</summary>
    public long HealthyProbes => Volatile.Read(ref _healthyProbes);

    /// <summary>Proxied responses of a status class: 1 for 1xx … 5 for 5xx.</summary>
    public long Responses(int statusClass) => Volatile.Read(ref _responseClasses[statusClass - 1]);

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

    /// <summary>
    /// Counts one finished proxied request (probes are counted apart: <see cref="RecordHealthyProbe"/>,
    /// <see cref="RecordHealthError"/>). A status outside 100-599 counts in the nearest class.
    /// </summary>
    public void RecordCall(int statusCode, TimeSpan latency, long rxBytes, long txBytes)
    {
        Interlocked.Increment(ref _calls);
        Interlocked.Increment(ref _responseClasses[Math.Clamp(statusCode / 100, 1, 5) - 1]);
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

    /// <summary>Upper bounds (seconds) of the request duration histogram buckets.</summary>
    public static readonly double[] DurationBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    private readonly long[] _durationCounts = new long[DurationBuckets.Length + 1];
    private long _durationSumTicks;

    /// <summary>Count per bucket (not cumulative); the last slot is +Inf.</summary>
    public long[] DurationCounts()
    {
        var copy = new long[_durationCounts.Length];
        for (var i = 0; i < copy.Length; i++)
        {
            copy[i] = Volatile.Read(ref _durationCounts[i]);
        }

        return copy;
    }

    public TimeSpan DurationSum => TimeSpan.FromTicks(Volatile.Read(ref _durationSumTicks));

    /// <summary>Adds a proxied request's duration to the histogram.</summary>
    public void RecordRequestDuration(TimeSpan latency)
    {
        var seconds = latency.TotalSeconds;
        var bucket = 0;
        while (bucket < DurationBuckets.Length && seconds > DurationBuckets[bucket])
        {
            bucket++;
        }

        Interlocked.Increment(ref _durationCounts[bucket]);
        Interlocked.Add(ref _durationSumTicks, latency.Ticks);
    }

    private readonly long[] _probeFailures = new long[Enum.GetValues<ProbeFailureKind>().Length];

    public long ProbeFailures(ProbeFailureKind kind) => Volatile.Read(ref _probeFailures[(int)kind]);

    /// <summary>Counts a probe answered 200.</summary>
    public void RecordHealthyProbe() => Interlocked.Increment(ref _healthyProbes);

    /// <summary>Counts a failed probe (transport error, timeout or non-200 status) by its kind.</summary>
    public void RecordHealthError(ProbeFailureKind kind)
    {
        Interlocked.Increment(ref _healthErrors);
        Interlocked.Increment(ref _probeFailures[(int)kind]);
    }
}

/// <summary>Why a probe failed, in a few classes small enough for a metric label.</summary>
internal enum ProbeFailureKind
{
    Refused,
    Timeout,
    Status,
    Tls,
    Other,
}
