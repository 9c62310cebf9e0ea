namespace Sidekick.Forwarding;

/// <summary>
/// The bytes all replay buffers (<see cref="ReplayableBody"/>) may hold at once, for the whole process. Without it,
/// every idempotent request announcing up to <c>--max-replay-size</c> held that much until its body was whole: a
/// thousand PUTs that stopped one byte short held 1.2 GB for as long as Kestrel's minimum body rate let them live.
/// A body that would take the budget past its capacity is streamed instead, exactly as a body above
/// <c>--max-replay-size</c> (never replayed on another backend), and counted in <see cref="Unbuffered"/>.
/// </summary>
internal sealed class ReplayBudget
{
    /// <summary>
    /// 64 MiB: 64 bodies of the default 1 MiB <c>--max-replay-size</c> buffered at once (far more of the small
    /// bodies idempotent requests usually carry: a DELETE's, a small PUT's), a bound a sidecar can afford next to
    /// the application it serves. Raised to <c>--max-replay-size</c> when that is larger, so one such body can still
    /// be buffered at a time.
    /// </summary>
    public const long DefaultBytes = 64L * 1024 * 1024;

    private long _free;
    private long _unbuffered;

    public ReplayBudget(long capacity)
    {
        Capacity = Math.Max(0, capacity);
        _free = Capacity;
    }

    /// <summary>The budget for a server buffering bodies up to <paramref name="maxReplayBytes"/>.</summary>
    public static ReplayBudget For(long maxReplayBytes, long? capacity = null) =>
        new(capacity ?? Math.Max(DefaultBytes, maxReplayBytes));

    public long Capacity { get; }

    /// <summary>Bytes reserved by the buffers of requests in progress.</summary>
    public long InUse => Capacity - Volatile.Read(ref _free);

    /// <summary>Bodies within <c>--max-replay-size</c> streamed without a buffer because the budget was spent.</summary>
    public long Unbuffered => Volatile.Read(ref _unbuffered);

    /// <summary>Reserves <paramref name="bytes"/> for a buffer; false (and counted) when they do not fit.</summary>
    public bool TryReserve(long bytes)
    {
        var free = Volatile.Read(ref _free);
        while (free >= bytes)
        {
            var seen = Interlocked.CompareExchange(ref _free, free - bytes, free);
            if (seen == free)
            {
                return true;
            }

            free = seen;
        }

        Interlocked.Increment(ref _unbuffered);
        return false;
    }

    /// <summary>Gives back what <see cref="TryReserve"/> took, when the request's buffer is released.</summary>
    public void Release(long bytes) => Interlocked.Add(ref _free, bytes);
}
