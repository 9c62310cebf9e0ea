using System.Collections.Concurrent;
using Microsoft.Win32.SafeHandles;

namespace Sidekick.Caching;

/// <summary>
/// The fills in flight: starts one (within SIDEKICK_CACHE_MAX_FILLS and the spool budget, with a spool file
/// under SIDEKICK_CACHE_SPOOL_DIR), finds the one filling an entry so that other requests read it while it
/// runs, and says when one is given up, and why (metric by reason, and a log line through <see cref="Abandoned"/>).
/// </summary>
internal sealed class CacheFills
{
    private readonly CacheOptions _options;
    private readonly S3CacheStore _store;
    private readonly PartBuffers _buffers;
    private readonly SpoolBudget _budget;
    private readonly ConcurrentDictionary<string, CacheFill> _running = new();
    private readonly long[] _abandoned = new long[Enum.GetValues<FillAbandonReason>().Length];
    private int _inFlight;

    public CacheFills(CacheOptions options, S3CacheStore store, CacheMetrics metrics)
    {
        _options = options;
        _store = store;
        Metrics = metrics;
        // A few spare parts serve a steady trickle of uploads; a burst allocates more and gives them back to the GC.
        _buffers = new PartBuffers(options.PartSize, retain: 4);
        _budget = new SpoolBudget(options.SpoolSize);
    }

    /// <summary>A fill was given up: the request target, the reason and what happened.</summary>
    public event Action<string, FillAbandonReason, string>? Abandoned;

    public CacheMetrics Metrics { get; }

    /// <summary>Fills whose upload has not ended yet.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Spool bytes reserved by the fills in flight.</summary>
    public long SpoolUsed => _budget.Used;

    /// <summary>The spool budget, SIDEKICK_CACHE_SPOOL_SIZE.</summary>
    public long SpoolCapacity => _budget.Capacity;

    public long AbandonedFor(FillAbandonReason reason) => Volatile.Read(ref _abandoned[(int)reason]);

    /// <summary>The fill in flight for <paramref name="key"/>, if one runs and has not been given up.</summary>
    public CacheFill? Running(string key) => _running.TryGetValue(key, out var fill) && !fill.Abandoned ? fill : null;

    /// <summary>
    /// Starts storing <paramref name="entry"/> under <paramref name="key"/>; null (and counted) when no fill may
    /// start: too many in flight, no room in the spool budget, or no spool file.
    /// </summary>
    public CacheFill? Start(string key, string target, CachedResponse entry, IReadOnlyDictionary<string, string> metadata)
    {
        if (Interlocked.Increment(ref _inFlight) > _options.MaxFills)
        {
            Interlocked.Decrement(ref _inFlight);
            return null; // not an abandonment: the response is simply not stored (docs/cache.md)
        }

        if (!_budget.TryReserve(entry.Length))
        {
            Interlocked.Decrement(ref _inFlight);
            Count(target, FillAbandonReason.SpoolFull, $"{entry.Length} bytes do not fit the spool budget ({_budget.Used} of {_budget.Capacity} in use)");
            return null;
        }

        SafeFileHandle spool;
        try
        {
            Directory.CreateDirectory(_options.SpoolDirectory);
            spool = File.OpenHandle(Path.Combine(_options.SpoolDirectory, $"fill-{Guid.NewGuid():N}.spool"), FileMode.CreateNew, FileAccess.ReadWrite,
                FileShare.None, FileOptions.DeleteOnClose | FileOptions.Asynchronous);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            _budget.Release(entry.Length);
            Interlocked.Decrement(ref _inFlight);
            Count(target, FillAbandonReason.SpoolError, ex.Message);
            return null;
        }

        Metrics.FillStarted();
        var fill = new CacheFill(this, _store, key, target, entry, metadata, _buffers, spool);
        if (_running.TryGetValue(key, out var earlier))
        {
            earlier.Abandon(FillAbandonReason.OriginIncomplete, "replaced by a newer fill of the same entry");
        }

        _running[key] = fill;
        return fill;
    }

    internal void OnCommitted(CacheFill fill)
    {
        _running.TryRemove(new KeyValuePair<string, CacheFill>(fill.Key, fill));
        Interlocked.Decrement(ref _inFlight);
        Metrics.FillCompleted();
    }

    internal void OnAbandoned(CacheFill fill, FillAbandonReason reason, string detail)
    {
        _running.TryRemove(new KeyValuePair<string, CacheFill>(fill.Key, fill));
        Interlocked.Decrement(ref _inFlight);
        Count(fill.Target, reason, detail);
    }

    /// <summary>The spool file is gone (upload and readers done): its share of the budget is free again.</summary>
    internal void OnSpoolReleased(CacheFill fill) => _budget.Release(fill.Length);

    private void Count(string target, FillAbandonReason reason, string detail)
    {
        Interlocked.Increment(ref _abandoned[(int)reason]);
        Metrics.FillAbandoned();
        Abandoned?.Invoke(target, reason, detail);
    }
}
