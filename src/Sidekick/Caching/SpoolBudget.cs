namespace Sidekick.Caching;

/// <summary>
/// The local disk the fills in flight may use together (SIDEKICK_CACHE_SPOOL_SIZE): a fill reserves its whole
/// announced length before it starts and gives it back when its spool file is gone.
/// </summary>
internal sealed class SpoolBudget(long capacity)
{
    private long _used;

    public long Capacity { get; } = capacity;

    /// <summary>Bytes reserved by fills in flight.</summary>
    public long Used => Volatile.Read(ref _used);

    public bool TryReserve(long bytes)
    {
        while (true)
        {
            var used = Volatile.Read(ref _used);
            if (used + bytes > Capacity)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _used, used + bytes, used) == used)
            {
                return true;
            }
        }
    }

    public void Release(long bytes) => Interlocked.Add(ref _used, -bytes);
}
