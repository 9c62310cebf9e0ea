using System.Collections.Concurrent;
using Microsoft.Net.Http.Headers;
using Microsoft.Win32.SafeHandles;

namespace Sidekick.Caching;

/// <summary>
/// The fills in flight: starts one (within SIDEKICK_CACHE_MAX_FILLS and the spool budget, with a spool file
/// under SIDEKICK_CACHE_SPOOL_DIR), finds the one filling an entry so that other requests read it while it
/// runs, and says when one is given up, and why (metric by reason, and a log line through <see cref="Abandoned"/>).
/// </summary>
internal sealed class CacheFills : IDisposable
{
    private readonly CacheOptions _options;
    private readonly S3CacheStore _store;
    private readonly SpoolFiles _spool;
    private readonly ConcurrentDictionary<string, CacheFill> _running = new();
    private readonly Lock _pieces = new();
    private readonly TimeProvider _time;
    private readonly long[] _abandoned = new long[Enum.GetValues<FillAbandonReason>().Length];
    private int _inFlight;
    private int _combining;

    public CacheFills(CacheOptions options, S3CacheStore store, CacheMetrics metrics, TimeProvider time)
    {
        _options = options;
        _time = time;
        _store = store;
        Metrics = metrics;
        _spool = new SpoolFiles(options.SpoolDirectory, options.SpoolSize, time);
        _notStoredLog = new NotStoredLog(time);
    }

    private readonly NotStoredLog _notStoredLog;

    /// <summary>Counts an answer served but not stored, and logs it when <see cref="NotStoredLog"/> says so.</summary>
    public void NotStored(string target, NotStoredReason reason, string detail)
    {
        Metrics.NotStored(reason);
        if (_notStoredLog.Due(reason, out var unlogged))
        {
            NotStoredLogged?.Invoke(target, reason, unlogged > 0 ? $"{detail}; {unlogged} more for this reason since the last line" : detail);
        }
    }

    /// <summary>
    /// A whole fill's client left while requests read its spool, and the rest is fetched without it
    /// (<see cref="FillContinuation"/>): counted, and told to <see cref="ContinuedWithoutClient"/>.
    /// </summary>
    public void Continued(CacheFill fill, long from)
    {
        Metrics.FillContinued();
        ContinuedWithoutClient?.Invoke(fill.Target, from, fill.Length);
    }

    /// <summary>A fill goes on without its client: the request target, the byte it goes on from and the body's length.</summary>
    public event Action<string, long, long>? ContinuedWithoutClient;

    /// <summary>
    /// A whole fill's client held it back while requests waited for its next bytes, and the rest is fetched for the fill
    /// alone (<see cref="FillHandOff"/>): counted, and told to <see cref="HandedOffFromClient"/>.
    /// </summary>
    public void HandedOff(CacheFill fill, long from)
    {
        Metrics.FillHandedOff();
        HandedOffFromClient?.Invoke(fill.Target, from, fill.Length);
    }

    /// <summary>A fill's rest is fetched apart from its slow client: the request target, the byte it goes on from and the body's length.</summary>
    public event Action<string, long, long>? HandedOffFromClient;

    /// <summary>A fill was given up: the request target, the reason and what happened.</summary>
    public event Action<string, FillAbandonReason, string>? Abandoned;

    /// <summary>An answer was not stored for a reason worth a log line (<see cref="NotStoredLog"/>): the target, the reason and why.</summary>
    public event Action<string, NotStoredReason, string>? NotStoredLogged;

    public CacheMetrics Metrics { get; }

    /// <summary>
    /// Whole fills write their spool with O_DIRECT where the file system allows it (<see cref="DirectSpoolWriter"/>);
    /// tests turn it off for one instance to drive the page-cache path, which the process takes where it does not.
    /// </summary>
    internal bool WritesDirect { get; init; } = true;

    /// <summary>Tests only: run by a page-cache spool write after its checks, just before the bytes are written.</summary>
    internal Action<CacheFill>? BeforeSpoolWriteForTests { get; init; }

    /// <summary>Fills whose upload has not ended yet.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Spool bytes reserved by the fills in flight.</summary>
    public long SpoolUsed => _spool.Reserved;

    /// <summary>Disk held by spool files kept a moment for the next fill (<see cref="SpoolFiles"/>).</summary>
    public long SpoolKept => _spool.Kept;

    /// <summary>The spool budget, SIDEKICK_CACHE_SPOOL_SIZE.</summary>
    public long SpoolCapacity => _spool.Capacity;

    /// <summary>SIDEKICK_CACHE_SPOOL_DIR.</summary>
    public string SpoolDirectory => _options.SpoolDirectory;

    /// <summary>The bytes free on the spool directory's file system, when that can be told (the budget may promise more).</summary>
    public long? SpoolDiskFree => _spool.FreeSpace();

    /// <inheritdoc cref="SpoolFiles.RemoveLeftovers"/>
    public (int Files, long Bytes) RemoveLeftoverSpoolFiles() => _spool.RemoveLeftovers();

    public long AbandonedFor(FillAbandonReason reason) => Volatile.Read(ref _abandoned[(int)reason]);

    /// <summary>The fill in flight for <paramref name="key"/>, if one runs and has not been given up.</summary>
    public CacheFill? Running(string key) => _running.TryGetValue(key, out var fill) && !fill.Abandoned ? fill : null;

    /// <summary>Gives up the running fill of <paramref name="key"/> and those of its variants (<see cref="CacheKey.Variant"/>).</summary>
    public void AbandonUnder(string key, FillAbandonReason reason, string why)
    {
        var variants = CacheKey.VariantPrefix(key);
        foreach (var (running, fill) in _running)
        {
            if (!fill.Abandoned && (running == key || running.StartsWith(variants, StringComparison.Ordinal)))
            {
                fill.Abandon(reason, why);
            }
        }
    }

    /// <summary>
    /// Starts storing <paramref name="entry"/> under <paramref name="key"/>; null (and counted) when no fill may
    /// start: too many in flight, no room in the spool budget, or no spool file.
    /// </summary>
    public CacheFill? Start(string key, string target, CachedResponse entry, IReadOnlyDictionary<string, string> metadata) =>
        Start(key, target, entry, metadata, fromPieces: false);

    /// <summary>
    /// The fill that combines ranged responses of the object <paramref name="entry"/> describes (same strong ETag,
    /// same length, filled with credentials or not alike): the one running for <paramref name="key"/>, or a new one
    /// (<c>Created</c>). A running combination of another version is given up for the newer one; a whole response
    /// being stored already, or one of the other credential kind, leaves this range unstored (null).
    /// </summary>
    public (CacheFill? Fill, bool Created) StartPiece(string key, string target, CachedResponse entry, IReadOnlyDictionary<string, string> metadata)
    {
        // One lock for the rare moment a combination starts, so concurrent ranges of one object (awscli reads ten
        // at once) join one fill instead of replacing each other's.
        lock (_pieces)
        {
            if (_running.TryGetValue(key, out var running) && !running.Abandoned)
            {
                if (!running.FromPieces)
                {
                    return (null, false);
                }

                if (running.Entry.ETag == entry.ETag && running.Length == entry.Length &&
                    running.Entry.Header(HeaderNames.ContentEncoding) == entry.Header(HeaderNames.ContentEncoding))
                {
                    // Pieces fetched with credentials make an entry only a requester's own 304 opens (docs/cache.md):
                    // an entry marked public must hold no byte that only credentials could fetch.
                    return running.Entry.FilledWithCredentials == entry.FilledWithCredentials ? (running, false) : (null, false);
                }

                running.Abandon(FillAbandonReason.ObjectChanged,
                    $"a range of another version came (ETag {entry.ETag}, {entry.Length} bytes; was {running.Entry.ETag}, {running.Length} bytes)");
            }

            return (Start(key, target, entry, metadata, fromPieces: true), true);
        }
    }

    /// <summary>
    /// How many fills combined from ranges may run at once: a quarter of SIDEKICK_CACHE_MAX_FILLS, at least one, so
    /// that ranges (cheap to send, one fill per query string) never hold every slot and whole GETs always find one.
    /// </summary>
    public int MaxCombining => Math.Max(1, _options.MaxFills / 4);

    /// <summary>Fills combined from ranges whose upload has not ended yet.</summary>
    public int Combining => Volatile.Read(ref _combining);

    /// <summary>
    /// Reserves <paramref name="bytes"/> more of the spool budget for a fill combined from ranges, as its ranges
    /// are written (<see cref="SpoolFiles.Grow"/>); false when the budget has no room for them.
    /// </summary>
    internal bool GrowSpool(SafeFileHandle spool, long bytes) => _spool.Grow(spool, bytes);

    /// <summary>A fill that cannot start: its slot is given back, and why is counted and logged.</summary>
    private CacheFill? Refused(string target, bool fromPieces, FillAbandonReason reason, string detail)
    {
        Interlocked.Decrement(ref _inFlight);
        if (fromPieces)
        {
            Interlocked.Decrement(ref _combining);
        }

        Count(target, reason, detail);
        return null;
    }

    private CacheFill? Start(string key, string target, CachedResponse entry, IReadOnlyDictionary<string, string> metadata, bool fromPieces)
    {
        if (fromPieces && Interlocked.Increment(ref _combining) > MaxCombining && !YieldedByWaitingPieces())
        {
            Interlocked.Decrement(ref _combining);
            // Not an abandonment: the range is served and not kept (docs/cache.md).
            NotStored(target, NotStoredReason.FillsBusy,
                $"{MaxCombining} fills combining ranges were already running (a quarter of SIDEKICK_CACHE_MAX_FILLS, {_options.MaxFills})");
            return null;
        }

        if (Interlocked.Increment(ref _inFlight) > _options.MaxFills && !YieldedByWaitingPieces() && !YieldedBySlowClient())
        {
            Interlocked.Decrement(ref _inFlight);
            if (fromPieces)
            {
                Interlocked.Decrement(ref _combining);
            }

            // Not an abandonment: the response is served and not stored (docs/cache.md).
            NotStored(target, NotStoredReason.FillsBusy, $"SIDEKICK_CACHE_MAX_FILLS ({_options.MaxFills}) fills were already running");
            return null;
        }

        SafeFileHandle? spool;
        try
        {
            // A combination reserves its ranges as they are written, into a sparse file: a 1-byte range of a large
            // object must not hold the object's length of budget and disk.
            spool = fromPieces ? _spool.TakeGrowing() : _spool.Take(entry.Length);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A disk with less room than the budget promised is a full spool; anything else is a spool that failed.
            return Refused(target, fromPieces, ex is SpoolDiskFullException ? FillAbandonReason.SpoolFull : FillAbandonReason.SpoolError, ex.Message);
        }

        if (spool is null)
        {
            // A slow reader's reservation comes back once its fill lets go of the spool, too late for this fill but
            // in time for the next ones.
            YieldedBySlowClient();
            return Refused(target, fromPieces, FillAbandonReason.SpoolFull, $"{entry.Length} bytes do not fit the spool budget ({_spool.Reserved} of {_spool.Capacity} in use)");
        }

        Metrics.FillStarted();
        var fill = new CacheFill(this, _store, key, target, entry, metadata, _options.PartSize, spool, _time, fromPieces);
        // One swap, so that of two fills started at once for one key exactly one stays registered and uploads.
        CacheFill? earlier = null;
        _running.AddOrUpdate(key, fill, (_, running) =>
        {
            earlier = running;
            return fill;
        });
        earlier?.Abandon(FillAbandonReason.OriginIncomplete, "replaced by a newer fill of the same entry");
        return fill;
    }

    /// <summary>
    /// Frees a slot for a new fill by giving up the combination of ranges that has waited longest for its next range,
    /// when it has waited at least <see cref="YieldAfter"/>: readers that fetch a few ranges of many objects (Spark
    /// on Parquet) must not keep every slot from the fills that would complete. True when a slot was freed (the
    /// caller keeps the one it counted).
    /// </summary>
    private bool YieldedByWaitingPieces()
    {
        CacheFill? longest = null;
        foreach (var (_, fill) in _running)
        {
            if (fill.FromPieces && !fill.Abandoned && !fill.BodyComplete && fill.IdleFor >= YieldAfter && (longest is null || fill.IdleFor > longest.IdleFor))
            {
                longest = fill;
            }
        }

        if (longest is null)
        {
            return false;
        }

        // Only the caller that ended it takes its slot: two fills starting at once may pick the same combination.
        return longest.Abandon(FillAbandonReason.RangesIncomplete, $"gave its slot to a new fill after {longest.IdleFor.TotalSeconds:0} s without a new range");
    }

    /// <summary>
    /// Frees a slot for a new fill by giving up the whole fill whose client reads slowest, when that client has read
    /// under <see cref="SlowClientRate"/> on average for at least <see cref="SlowClientAfter"/>. A whole fill goes at
    /// its client's pace and keeps its slot and spool reservation until that client has the body: without this, 64
    /// clients reading a few bytes a second (SIDEKICK_CACHE_MAX_FILLS) turned the cache off for every other reader.
    /// The slow client is still served, from the origin; only the entry is not made. True when a slot was freed.
    /// </summary>
    private bool YieldedBySlowClient()
    {
        CacheFill? slowest = null;
        var slowestRate = SlowClientRate;
        foreach (var (_, fill) in _running)
        {
            var running = fill.Running;
            if (fill.FromPieces || fill.Abandoned || fill.BodyComplete || running < SlowClientAfter)
            {
                continue;
            }

            var rate = fill.Written / running.TotalSeconds;
            if (rate < slowestRate)
            {
                (slowest, slowestRate) = (fill, rate);
            }
        }

        if (slowest is null)
        {
            return false;
        }

        return slowest.Abandon(FillAbandonReason.ClientTooSlow, // as above: one slot for one caller
            $"gave its slot to a new fill: its client read {slowestRate / 1024:0} KiB/s on average over {slowest.Running.TotalSeconds:0} s " +
            $"(under {SlowClientRate / 1024 / 1024:0} MiB/s once every slot or the spool is taken)");
    }

    /// <summary>The average rate under which a whole fill's client counts as slow (bytes per second).</summary>
    internal const double SlowClientRate = 1024 * 1024;

    /// <summary>How long a whole fill runs before its client's rate is judged.</summary>
    internal static TimeSpan SlowClientAfter { get; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a combination of ranges may wait for its next range before a new fill may take its slot.</summary>
    internal static TimeSpan YieldAfter { get; } = TimeSpan.FromSeconds(5);

    internal void OnCommitted(CacheFill fill, bool stored)
    {
        _running.TryRemove(new KeyValuePair<string, CacheFill>(fill.Key, fill));
        // Counted before the fill leaves the fills in flight: whoever sees none in flight sees how each one ended.
        if (stored)
        {
            Metrics.FillCompleted();
        }

        Ended(fill);
    }

    internal void OnAbandoned(CacheFill fill, FillAbandonReason reason, string detail)
    {
        _running.TryRemove(new KeyValuePair<string, CacheFill>(fill.Key, fill));
        try
        {
            Count(fill.Target, reason, detail); // before Ended, as in OnCommitted
        }
        finally
        {
            Ended(fill); // even when a watcher of Abandoned throws
        }
    }

    private void Ended(CacheFill fill)
    {
        Interlocked.Decrement(ref _inFlight);
        if (fill.FromPieces)
        {
            Interlocked.Decrement(ref _combining);
        }
    }

    /// <summary>The fill is done with its spool file (upload and readers done): kept for the next fill, or deleted.</summary>
    internal void OnSpoolReleased(SafeFileHandle spool) => _spool.Return(spool);

    /// <summary>Deletes the spool files kept for reuse (at shutdown).</summary>
    public void Dispose() => _spool.Dispose();

    private void Count(string target, FillAbandonReason reason, string detail)
    {
        Interlocked.Increment(ref _abandoned[(int)reason]);
        Metrics.FillAbandoned();
        Abandoned?.Invoke(target, reason, detail);
    }
}
