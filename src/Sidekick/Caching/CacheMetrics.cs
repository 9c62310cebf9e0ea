using System.Diagnostics.Metrics;

namespace Sidekick.Caching;

/// <summary>Cache counters, for the Prometheus exposition and (meter "Sidekick") dotnet-counters/OpenTelemetry.</summary>
internal sealed class CacheMetrics : IDisposable
{
    private readonly Meter _meter = new("Sidekick.Cache");
    private long _hits;
    private long _misses;
    private long _revalidated;
    private long _bypassed;
    private long _fills;
    private long _fillsCompleted;
    private long _fillsAbandoned;
    private long _fillsContinued;
    private long _fillsHandedOff;
    private long _bytesServed;
    private readonly long[] _storeErrors = new long[CacheStoreFailure.Reasons.Length];
    private long _evictions;
    private long _bucketsInvalidated;
    private long _bucketsInvalidatedUnread;
    private readonly long[] _storedReadsBroken = new long[Enum.GetValues<BrokenRead>().Length];
    private long _fillReadsFromOrigin;
    private readonly long[] _fillWaits = new long[Enum.GetValues<FillWaitOutcome>().Length];
    private readonly long[] _notStored = new long[Enum.GetValues<NotStoredReason>().Length];
    private long _racesYielded;
    private long _racesFetchedTwice;
    private long _fillReadsCut;
    private readonly long[] _backgroundRevalidations = new long[Enum.GetValues<BackgroundOutcome>().Length];

    public CacheMetrics()
    {
        _meter.CreateObservableCounter("sidekick.cache.hits", () => Hits);
        _meter.CreateObservableCounter("sidekick.cache.misses", () => Misses);
        _meter.CreateObservableCounter("sidekick.cache.revalidated", () => Revalidated);
        _meter.CreateObservableCounter("sidekick.cache.fills", () => Fills);
        _meter.CreateObservableCounter("sidekick.cache.fills_abandoned", () => FillsAbandoned);
        _meter.CreateObservableCounter("sidekick.cache.bytes_served", () => BytesServed, unit: "By");
        _meter.CreateObservableCounter("sidekick.cache.store_errors", () => CacheStoreFailure.Reasons.Select(r =>
            new Measurement<long>(StoreErrorsOf(r), new KeyValuePair<string, object?>("reason", CacheStoreFailure.LabelOf(r)))));
    }

    public long Hits => Volatile.Read(ref _hits);
    public long Misses => Volatile.Read(ref _misses);
    public long Revalidated => Volatile.Read(ref _revalidated);
    public long Bypassed => Volatile.Read(ref _bypassed);
    public long Fills => Volatile.Read(ref _fills);
    public long FillsCompleted => Volatile.Read(ref _fillsCompleted);
    public long FillsAbandoned => Volatile.Read(ref _fillsAbandoned);
    public long BytesServed => Volatile.Read(ref _bytesServed);
    public long StoreErrors => CacheStoreFailure.Reasons.Sum(StoreErrorsOf);

    public long StoreErrorsOf(CacheStoreFailureReason reason) => Volatile.Read(ref _storeErrors[(int)reason]);
    public long Evictions => Volatile.Read(ref _evictions);
    public long BucketsInvalidated(bool bodyUnread) => Volatile.Read(ref bodyUnread ? ref _bucketsInvalidatedUnread : ref _bucketsInvalidated);
    public long StoredReadsResumed => Volatile.Read(ref _storedReadsBroken[(int)BrokenRead.Resumed]);
    public long StoredReadsCut => Volatile.Read(ref _storedReadsBroken[(int)BrokenRead.Cut]);
    public long StoredReadsFromOrigin => Volatile.Read(ref _storedReadsBroken[(int)BrokenRead.FromOrigin]);

    public void Hit() => Interlocked.Increment(ref _hits);
    public void Miss() => Interlocked.Increment(ref _misses);
    public void Revalidation() => Interlocked.Increment(ref _revalidated);
    public void Bypass() => Interlocked.Increment(ref _bypassed);
    public void FillStarted() => Interlocked.Increment(ref _fills);
    public void FillCompleted() => Interlocked.Increment(ref _fillsCompleted);
    public void FillAbandoned() => Interlocked.Increment(ref _fillsAbandoned);
    public void Served(long bytes) => Interlocked.Add(ref _bytesServed, bytes);
    /// <summary>Counts a failed store call by the reason <paramref name="error"/> shows (other when there is none).</summary>
    public void StoreError(Exception? error = null) => StoreError(CacheStoreFailure.Of(error));

    public void StoreError(CacheStoreFailure failure) => Interlocked.Increment(ref _storeErrors[(int)failure.Reason]);
    public void Evicted() => Interlocked.Increment(ref _evictions);

    /// <summary>A write invalidated every entry under a bucket: its access or existence changed, or a DeleteObjects body was not read (<paramref name="bodyUnread"/>).</summary>
    public void BucketInvalidated(bool bodyUnread) => Interlocked.Increment(ref bodyUnread ? ref _bucketsInvalidatedUnread : ref _bucketsInvalidated);

    /// <summary>A stored body's read broke midway: resumed from the store, finished from the origin, or the client's response cut.</summary>
    public void StoredReadBroken(BrokenRead outcome) => Interlocked.Increment(ref _storedReadsBroken[(int)outcome]);

    /// <summary>Counts a miss that waited for another sidecar's fill, by how the wait ended.</summary>
    public void FillWait(FillWaitOutcome outcome) => Interlocked.Increment(ref _fillWaits[(int)outcome]);

    public long FillWaitsOf(FillWaitOutcome outcome) => Volatile.Read(ref _fillWaits[(int)outcome]);

    /// <summary>A GET's answer was served but not stored, for <paramref name="reason"/>.</summary>
    public void NotStored(NotStoredReason reason) => Interlocked.Increment(ref _notStored[(int)reason]);

    public long NotStoredOf(NotStoredReason reason) => Volatile.Read(ref _notStored[(int)reason]);

    /// <summary>
    /// Counts a lease taken by another sidecar within a round trip of this one's (its write stayed where the store
    /// ignores If-None-Match, its create came first where the store honours it), by what came first:
    /// the store's answer (this request yielded to the other fill) or the origin's (fetched here too, stored there).
    /// </summary>
    public void FillRaceLost(bool fetchedTwice) => Interlocked.Increment(ref fetchedTwice ? ref _racesFetchedTwice : ref _racesYielded);

    public long FillRacesLost(bool fetchedTwice) => Volatile.Read(ref fetchedTwice ? ref _racesFetchedTwice : ref _racesYielded);

    /// <summary>A request reading a fill in progress was cut: the fill sent nothing for a while.</summary>
    /// <summary>Counts a response read from a fill that broke before its end (the fill stalled or was given up): finished from the origin, or cut.</summary>
    public void FillReadBroken(BrokenRead outcome) => Interlocked.Increment(ref outcome == BrokenRead.FromOrigin ? ref _fillReadsFromOrigin : ref _fillReadsCut);

    public long FillReadsFromOrigin => Volatile.Read(ref _fillReadsFromOrigin);

    public long FillReadsCut => Volatile.Read(ref _fillReadsCut);

    /// <summary>Counts a whole fill whose client left and whose rest is fetched from the origin for the requests reading it.</summary>
    public void FillContinued() => Interlocked.Increment(ref _fillsContinued);

    public long FillsContinued => Volatile.Read(ref _fillsContinued);

    /// <summary>Counts a whole fill whose client held it back while requests waited for it: the rest is fetched from the origin for the fill.</summary>
    public void FillHandedOff() => Interlocked.Increment(ref _fillsHandedOff);

    public long FillsHandedOff => Volatile.Read(ref _fillsHandedOff);

    /// <summary>Counts a stale-while-revalidate refresh by what the origin said of the entry.</summary>
    public void BackgroundRevalidation(BackgroundOutcome outcome) => Interlocked.Increment(ref _backgroundRevalidations[(int)outcome]);

    public long BackgroundRevalidationsOf(BackgroundOutcome outcome) => Volatile.Read(ref _backgroundRevalidations[(int)outcome]);

    /// <summary>Prometheus text for the cache counters, the store's health and the fills running now.</summary>
    public void WriteTo(System.Text.StringBuilder text, bool storeUp, int fillsInFlight, CacheFills? fills = null)
    {
        void Counter(string name, string help, long value) =>
            text.Append("# HELP ").Append(name).Append(' ').Append(help).Append("\n# TYPE ").Append(name).Append(" counter\n")
                .Append(name).Append(' ').Append(value).Append('\n');
        Counter("sidekick_cache_hits_total", "Responses served from the cache without asking a backend", Hits);
        Counter("sidekick_cache_misses_total", "Cacheable requests not found in the cache", Misses);
        Counter("sidekick_cache_revalidated_total", "Stored responses confirmed by a backend (304) and served from the cache", Revalidated);
        Counter("sidekick_cache_bypassed_total", "Requests that did not use the cache (store down, no-store, errors)", Bypassed);
        Counter("sidekick_cache_fills_total", "Responses being written to the cache while served", Fills);
        Counter("sidekick_cache_fills_completed_total", "Fills that became visible entries", FillsCompleted);
        text.Append("# HELP sidekick_cache_fills_abandoned_total Fills given up, by reason (docs/cache.md)\n# TYPE sidekick_cache_fills_abandoned_total counter\n");
        foreach (var reason in Enum.GetValues<FillAbandonReason>())
        {
            text.Append("sidekick_cache_fills_abandoned_total{reason=\"").Append(AbandonLabel(reason)).Append("\"} ").Append(fills?.AbandonedFor(reason) ?? 0).Append('\n');
        }

        text.Append("# HELP sidekick_cache_not_stored_total GET answers served but not stored, by reason (docs/cache.md)\n# TYPE sidekick_cache_not_stored_total counter\n");
        foreach (var reason in Enum.GetValues<NotStoredReason>())
        {
            text.Append("sidekick_cache_not_stored_total{reason=\"").Append(NotStoredLabel(reason)).Append("\"} ").Append(NotStoredOf(reason)).Append('\n');
        }

        text.Append("# HELP sidekick_cache_spool_bytes Spool space reserved by the fills in flight\n# TYPE sidekick_cache_spool_bytes gauge\n")
            .Append("sidekick_cache_spool_bytes ").Append(fills?.SpoolUsed ?? 0).Append('\n');
        text.Append("# HELP sidekick_cache_spool_kept_bytes Spool files of finished fills kept a moment for the next fill to overwrite\n# TYPE sidekick_cache_spool_kept_bytes gauge\n")
            .Append("sidekick_cache_spool_kept_bytes ").Append(fills?.SpoolKept ?? 0).Append('\n');
        Counter("sidekick_cache_served_bytes_total", "Body bytes served from the cache", BytesServed);
        // Upstream's name, now by reason: a wrong key or a missing bucket is not an outage.
        text.Append("# HELP sidekick_cache_store_errors_total Errors talking to the cache store, by reason\n# TYPE sidekick_cache_store_errors_total counter\n");
        foreach (var reason in CacheStoreFailure.Reasons)
        {
            text.Append("sidekick_cache_store_errors_total{reason=\"").Append(CacheStoreFailure.LabelOf(reason)).Append("\"} ").Append(StoreErrorsOf(reason)).Append('\n');
        }

        text.Append("# HELP sidekick_cache_store_up 1 while the cache store answers (its last probe or call succeeded), else 0\n# TYPE sidekick_cache_store_up gauge\n")
            .Append("sidekick_cache_store_up ").Append(storeUp ? 1 : 0).Append('\n');
        text.Append("# HELP sidekick_cache_fills_in_flight Responses being written to the cache now\n# TYPE sidekick_cache_fills_in_flight gauge\n")
            .Append("sidekick_cache_fills_in_flight ").Append(fillsInFlight).Append('\n');
        text.Append("# HELP sidekick_cache_fill_waits_total Misses that waited for another sidecar's fill of the same entry, by how the wait ended\n# TYPE sidekick_cache_fill_waits_total counter\n");
        foreach (var outcome in Enum.GetValues<FillWaitOutcome>())
        {
            text.Append("sidekick_cache_fill_waits_total{outcome=\"").Append(FillWaitLabel(outcome)).Append("\"} ").Append(FillWaitsOf(outcome)).Append('\n');
        }

        text.Append("# HELP sidekick_cache_fill_races_lost_total Leases taken by another sidecar at the same moment as this one's, by what came first: the store's answer (yielded) or the origin's (fetched_twice)\n# TYPE sidekick_cache_fill_races_lost_total counter\n")
            .Append("sidekick_cache_fill_races_lost_total{outcome=\"yielded\"} ").Append(FillRacesLost(fetchedTwice: false)).Append('\n')
            .Append("sidekick_cache_fill_races_lost_total{outcome=\"fetched_twice\"} ").Append(FillRacesLost(fetchedTwice: true)).Append('\n');
        Counter("sidekick_cache_fills_continued_total",
            "Fills whose client left while other requests read them: the rest of the body was asked of the origin (a Range request for the same version) and the fill went on",
            FillsContinued);
        Counter("sidekick_cache_fills_handed_off_total",
            "Fills whose client held them back (it took the bytes slower than the origin sent them) while other requests waited for their next bytes: the rest was asked of the origin for the fill, at the origin's pace, and the client went on at its own",
            FillsHandedOff);
        Counter("sidekick_cache_fill_reads_cut_total",
            "Responses read from a fill in progress that were cut: the fill sent no byte for 30 s (its first client stopped reading, or the origin stalled) or was given up before their end, and the origin could not finish them",
            FillReadsCut);
        Counter("sidekick_cache_fill_reads_from_origin_total",
            "Responses read from a fill in progress that stalled for 30 s or was given up before their end, finished from the origin (a Range request for the same version)",
            FillReadsFromOrigin);
        text.Append("# HELP sidekick_cache_background_revalidations_total Stale-while-revalidate refreshes, by what the origin said: confirmed (a 304 naming the entry), changed (a new version or gone: the entry evicted), failed (no answer, or one that says nothing of the entry)\n# TYPE sidekick_cache_background_revalidations_total counter\n");
        foreach (var outcome in Enum.GetValues<BackgroundOutcome>())
        {
            text.Append("sidekick_cache_background_revalidations_total{outcome=\"").Append(outcome.ToString().ToLowerInvariant()).Append("\"} ")
                .Append(BackgroundRevalidationsOf(outcome)).Append('\n');
        }

        text.Append("# HELP sidekick_cache_store_reads_broken_total Stored bodies whose read from the store broke midway: resumed where it broke, finished from the origin (a Range request for the same version), or the client's response cut\n# TYPE sidekick_cache_store_reads_broken_total counter\n")
            .Append("sidekick_cache_store_reads_broken_total{outcome=\"resumed\"} ").Append(StoredReadsResumed).Append('\n')
            .Append("sidekick_cache_store_reads_broken_total{outcome=\"from_origin\"} ").Append(StoredReadsFromOrigin).Append('\n')
            .Append("sidekick_cache_store_reads_broken_total{outcome=\"cut\"} ").Append(StoredReadsCut).Append('\n');
        text.Append("# HELP sidekick_cache_spool_direct_bytes_total Body bytes of whole fills written to the spool past the page cache, by how they reached its buffers: received_in_place (the client's response was received into the spool's buffer and sent from there: plain HTTP/1.1 clients on the default socket engine), copied (TLS and HTTP/2 clients, the .NET socket engine, the YARP forwarder, chunked bodies)\n# TYPE sidekick_cache_spool_direct_bytes_total counter\n")
            .Append("sidekick_cache_spool_direct_bytes_total{how=\"received_in_place\"} ").Append(DirectSpoolWriter.BytesInPlace).Append('\n')
            .Append("sidekick_cache_spool_direct_bytes_total{how=\"copied\"} ").Append(DirectSpoolWriter.BytesCopied).Append('\n');
        text.Append("# HELP sidekick_cache_spool_buffers_lent_bytes Memory of spool buffers that client responses were received into and that are not back in the pool yet (being written to the spool, or still being sent)\n# TYPE sidekick_cache_spool_buffers_lent_bytes gauge\n")
            .Append("sidekick_cache_spool_buffers_lent_bytes ").Append(DirectSpoolWriter.LentBytes).Append('\n');
        Counter("sidekick_cache_evictions_total", "Entries removed (404/410, invalidation by PUT/POST/DELETE, a stored object not as long as its entry)", Evictions);
        text.Append("# HELP sidekick_cache_bucket_invalidations_total Writes that made every entry under a bucket a miss on this sidecar, by why: bucket_write (its policy, ACL, public access block or ownership set, or the bucket deleted), delete_objects_unread (a DeleteObjects body too large or not readable)\n# TYPE sidekick_cache_bucket_invalidations_total counter\n")
            .Append("sidekick_cache_bucket_invalidations_total{reason=\"bucket_write\"} ").Append(BucketsInvalidated(bodyUnread: false)).Append('\n')
            .Append("sidekick_cache_bucket_invalidations_total{reason=\"delete_objects_unread\"} ").Append(BucketsInvalidated(bodyUnread: true)).Append('\n');
    }

    public static string AbandonLabel(FillAbandonReason reason) => reason switch
    {
        FillAbandonReason.SpoolFull => "spool_full",
        FillAbandonReason.SpoolError => "spool_error",
        FillAbandonReason.StoreError => "store_error",
        FillAbandonReason.OriginIncomplete => "origin_incomplete",
        FillAbandonReason.RangesIncomplete => "ranges_incomplete",
        FillAbandonReason.ObjectChanged => "object_changed",
        FillAbandonReason.ClientTooSlow => "client_too_slow",
        _ => "client_gone",
    };

    public static string NotStoredLabel(NotStoredReason reason) => reason switch
    {
        NotStoredReason.Status => "status",
        NotStoredReason.NoStore => "no_store",
        NotStoredReason.Private => "private",
        NotStoredReason.VaryStar => "vary_star",
        NotStoredReason.RangeNotCombinable => "range_not_combinable",
        NotStoredReason.UnknownLength => "unknown_length",
        NotStoredReason.TooSmall => "too_small",
        NotStoredReason.TooLarge => "too_large",
        NotStoredReason.NoFreshness => "no_freshness",
        NotStoredReason.HeadersTooLarge => "headers_too_large",
        NotStoredReason.UnkeyedHeader => "unkeyed_header",
        NotStoredReason.CustomerKey => "customer_key",
        _ => "fills_busy",
    };

    public static string FillWaitLabel(FillWaitOutcome outcome) => outcome switch
    {
        FillWaitOutcome.Stored => "stored",
        FillWaitOutcome.NotStored => "not_stored",
        FillWaitOutcome.TooSlow => "too_slow",
        FillWaitOutcome.TimedOut => "timed_out",
        FillWaitOutcome.JustStored => "just_stored",
        _ => "dead",
    };

    public void Dispose() => _meter.Dispose();
}

/// <summary>What a stale-while-revalidate refresh learned of the entry it asked about.</summary>
internal enum BackgroundOutcome
{
    Confirmed,
    Changed,
    Failed,
}
