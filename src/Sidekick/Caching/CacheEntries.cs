using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Net.Http.Headers;
using StoreRange = System.Net.Http.Headers.RangeItemHeaderValue;

namespace Sidekick.Caching;

/// <summary>
/// The stored side of the cache: finding an entry (and the Vary variant a request selects), starting a fill
/// from a response head, refreshing an entry's headers after a 304, evicting and invalidating. Store
/// failures mark the store offline, so that requests bypass it; none is ever an error for the client.
/// </summary>
internal sealed class CacheEntries(CacheOptions options, S3CacheStore store, CacheHealth health, CacheFills fills, CacheMetrics metrics, TimeProvider time)
{
    /// <summary>Bounds the in-process overlay of refreshed headers; losing it only costs a revalidation.</summary>
    private const int MaxRefreshed = 10_000;

    private readonly ConcurrentDictionary<string, CachedResponse> _refreshed = new();

    // When each key's refreshed headers were last written to the bucket (TimeProvider timestamps).
    private readonly ConcurrentDictionary<string, long> _refreshWritten = new();

    /// <summary>
    /// Keys whose removal the store has not confirmed: an unsafe request invalidated them while the store was offline,
    /// its answer stopped waiting for their delete (<see cref="EvictionWait"/>; a DeleteObjects body's keys at once), or
    /// their delete failed (RFC 9111 §4.4). Until a delete succeeds, this sidecar never serves what the store holds
    /// under them (a lookup finds nothing, so their requests go to the origin as misses), and they are deleted again
    /// each time the store is found healthy: otherwise the version a DELETE or PUT replaced came back as a HIT once the
    /// store did. At most <see cref="MaxOwedEvictions"/> are remembered.
    /// </summary>
    private readonly ConcurrentDictionary<string, byte> _owed = new();

    /// <inheritdoc cref="_owed"/>
    internal const int MaxOwedEvictions = 100_000;

    /// <summary>What this sidecar invalidated lately: an entry received before is a miss here (see <see cref="InvalidationMemory"/>).</summary>
    private readonly InvalidationMemory _invalidated = new(time);

    private int _payingOwed;

    /// <summary>
    /// How often this sidecar writes one entry's refreshed headers to the bucket at most. S3 changes metadata only by
    /// copying the object onto itself, which rewrites the whole object: a 2 GiB entry read again as 256 signed ranges
    /// (each revalidated by its own 304) was copied 256 times, under its own readers. In between, the refreshed
    /// headers serve this sidecar from memory, and another sidecar that finds them stale asks the origin itself.
    /// </summary>
    internal static TimeSpan RefreshWriteInterval { get; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Finds the stored response for this request: the plain key, or the variant its Vary marker selects. When the
    /// request would be answered with the entry's body (<see cref="OpensBody"/>) the lookup is a GET that opens that
    /// body too, whole or its one range (<see cref="CacheLookup.Opened"/>, the caller's to dispose): a HIT then costs
    /// the store one round trip, not a HEAD and a GET.
    /// </summary>
    public async Task<CacheLookup?> FindAsync(string key, HttpRequest request, CancellationToken cancellationToken)
    {
        if (IsOwed(key))
        {
            return null;
        }

        var openBody = OpensBody(request, out var range);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.StoreTimeout);
        if (await store.LookAsync(key, openBody, range, timeout.Token) is not var (head, opened))
        {
            return null;
        }

        if (head.Metadata(S3CacheStore.VaryMetadata) is { Length: > 0 } varyNames)
        {
            opened?.Dispose(); // a Vary marker: an empty object
            var names = varyNames.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            key = CacheKey.Variant(key, names.Select(n => CachePolicy.VaryValue(request.Headers, n)).ToArray());
            // A variant's own eviction (a 304 naming another version, a 404) is owed under its variant key.
            if (IsOwed(key) || await store.LookAsync(key, openBody, range, timeout.Token) is not var (variantHead, variantOpened))
            {
                return null;
            }

            (head, opened) = (variantHead, variantOpened);
        }

        if (CachedResponse.Deserialize(head.Metadata(S3CacheStore.EntryMetadata)) is not { } entry || !CachePolicy.VarySelects(entry, request.Headers) ||
            InvalidatedSince(request, entry))
        {
            opened?.Dispose();
            return null;
        }

        if (head.SizeMismatch(entry.Length) is { } mismatch)
        {
            // The object does not hold the body its metadata describes (a lost tail, another writer's bytes under the
            // same metadata): served, every client would be cut at the same byte, or get the wrong bytes, for as long as
            // the entry lives, and a 304 only confirms the metadata. It goes, and this request is a miss.
            opened?.Dispose();
            await EvictFaultyAsync(key, mismatch);
            return null;
        }

        return new CacheLookup(key, Newest(key, entry), head.ETag, opened);
    }

    /// <summary>
    /// An entry whose stored object was found not to hold the body its metadata describes, when it was looked up or
    /// read (the key, and what was wrong): it was evicted. For the --log line.
    /// </summary>
    public event Action<string, string>? FaultyEntryEvicted;

    /// <summary>
    /// Evicts an entry whose object does not hold what its metadata says (<see cref="FaultyEntryEvicted"/>): a fact
    /// about that one entry, not about the store's health. Awaited before the request goes to the origin, so that the
    /// fill that request may start comes after the delete. A fill of the entry running here is left alone: it brings the
    /// origin's bytes, not the faulty object's (another request that looked the faulty object up just before may evict
    /// it after that fill began).
    /// </summary>
    public async Task EvictFaultyAsync(string key, string detail)
    {
        await EvictAsync(key, fillsToo: false);
        FaultyEntryEvicted?.Invoke(key, detail);
    }

    /// <summary>
    /// Whether a request found in the cache is usually answered with the entry's body, and which of its bytes: a GET
    /// without the client's own validators (If-None-Match, If-Modified-Since: mostly answered 304) or If-Range (which
    /// may turn a range into the whole body), asking for the whole body or one range of it from a given byte. If-Match and
    /// If-Unmodified-Since, which SDKs send on every ranged read to pin a version, rarely fail, so they do open it.
    /// </summary>
    internal static bool OpensBody(HttpRequest request, out StoreRange? range)
    {
        range = null;
        var headers = request.Headers;
        if (!HttpMethods.IsGet(request.Method) || headers.IfNoneMatch.Count > 0 || headers.IfModifiedSince.Count > 0 || headers.IfRange.Count > 0)
        {
            return false;
        }

        if (headers.Range.Count == 0)
        {
            return true;
        }

        // A suffix range (bytes=-N) is looked up with a HEAD and read as the bytes it names in the entry: s3rver answers
        // bytes=-3 of a 10-byte object with bytes 0-3.
        if (headers.Range.Count == 1 && System.Net.Http.Headers.RangeHeaderValue.TryParse(headers.Range.ToString(), out var parsed) &&
            string.Equals(parsed.Unit, "bytes", StringComparison.OrdinalIgnoreCase) && parsed.Ranges.Count == 1 && parsed.Ranges.Single() is { From: not null } one)
        {
            range = one;
            return true;
        }

        return false;
    }

    /// <summary>
    /// Starts storing the response whose head is on <paramref name="context"/> when it may be stored (RFC 9111
    /// §3): its header values as the backend sent them, its Vary marker, whether credentials filled it. A 206 of a
    /// single range of an object whose length it names, with a strong ETag, joins the fill that combines that
    /// object's ranges (§3.4). Null when nothing of it is stored.
    /// </summary>
    public FillWriter? StartFill(HttpContext context, string key, CacheControl requestControl, DateTimeOffset requestTime)
    {
        var response = context.Response;
        if (!HttpMethods.IsGet(context.Request.Method))
        {
            return null;
        }

        var headers = StoredHeaders(response.Headers);
        var status = response.StatusCode;
        var length = CachedResponse.BodyLength(status, response.ContentLength);
        PartialContent piece = default;
        var rangeRequested = context.Request.Headers.Range.Count > 0;
        var ranged = status == StatusCodes.Status206PartialContent;
        if (ranged)
        {
            // Only the answer to a Range request is a piece of the object its target names (§3.4). S3 also answers
            // GetObject with ?partNumber=N by a 206 of that part, with no Range asked: that target names a part, and
            // such a piece, filled under its own key, would either hold a fill open until it gave up or, covering a
            // one-part object, be served later as a 200 without its Content-Range. Passed through, never stored.
            if (!rangeRequested || !PartialContent.TryRead(response, out piece))
            {
                NotStored(context, rangeRequested ? NotStoredReason.RangeNotCombinable : NotStoredReason.Status);
                return null;
            }

            // Stored as the object's 200: the range's own framing fields describe the piece, not the object.
            status = StatusCodes.Status200OK;
            length = piece.CompleteLength;
            headers = [.. headers.Where(h => !string.Equals(h.Key, HeaderNames.ContentRange, StringComparison.OrdinalIgnoreCase) &&
                                             !string.Equals(h.Key, HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase)),
                new(HeaderNames.ContentLength, piece.CompleteLength.ToString(CultureInfo.InvariantCulture))];
        }

        var responseControl = CacheControl.Parse(response.Headers.CacheControl).RestrictedBy(TargetedCacheControl.Parse(response.Headers[TargetedCacheControl.FieldName]));
        if (CachePolicy.WhyNotStorable(status, requestControl, responseControl, headers, length, options, rangeRequested) is { } why)
        {
            NotStored(context, why, why switch
            {
                NotStoredReason.TooLarge => $"{length} bytes, more than SIDEKICK_CACHE_MAX_SIZE ({options.MaxSize} bytes)",
                NotStoredReason.UnknownLength => "the origin sent no Content-Length, and an entry's size must be known before its upload starts",
                _ => "",
            });
            return null;
        }

        var varyNames = response.Headers.Vary.ToString()
            .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(n => n.ToLowerInvariant()).Distinct().Order(StringComparer.Ordinal).ToArray();
        var varyValues = varyNames.Select(n => CachePolicy.VaryValue(context.Request.Headers, n)).ToArray();
        var responseTime = time.GetUtcNow();
        var date = CachedResponse.HttpDate(response.Headers.Date.ToString());
        var entry = new CachedResponse
        {
            Status = status,
            Headers = headers,
            Length = length!.Value,
            ReceivedAt = responseTime,
            InitialAge = CachePolicy.InitialAge(response.Headers.Age.ToString(), date, requestTime, responseTime),
            Date = date,
            VaryNames = varyNames,
            VaryValues = varyValues,
            FilledWithCredentials = CachePolicy.CarriesCredentials(context.Request),
        };
        var serialized = entry.Serialize();
        if (!CachedResponse.FitsInMetadata(serialized))
        {
            NotStored(context, NotStoredReason.HeadersTooLarge, $"its header fields serialize to {serialized.Length} bytes, over the 1900 the store's 2 KiB of user metadata leaves for them");
            return null;
        }

        var target = TargetOf(context);
        var entryKey = varyNames.Length > 0 ? CacheKey.Variant(key, varyValues) : key;
        var metadata = new Dictionary<string, string> { ["sidekick"] = serialized };
        CacheFill? fill;
        bool created;
        if (ranged)
        {
            (fill, created) = fills.StartPiece(entryKey, target, entry, metadata);
        }
        else
        {
            fill = fills.Start(entryKey, target, entry, metadata);
            created = fill is not null;
        }

        if (created && varyNames.Length > 0)
        {
            PutVaryMarker(key, varyNames);
        }

        return fill is null ? null : ranged ? fill.Writer(piece.First, piece.Last + 1) : fill.Writer(0, entry.Length);
    }

    /// <summary>
    /// Counts an answer not stored; the request target (redacted) is made only for a reason that may be logged, as most
    /// answers not stored are small objects under the minimum.
    /// </summary>
    private void NotStored(HttpContext context, NotStoredReason reason, string detail = "")
    {
        if (NotStoredLog.IsLogged(reason))
        {
            fills.NotStored(TargetOf(context), reason, detail);
        }
        else
        {
            metrics.NotStored(reason);
        }
    }

    /// <summary>The request target as logs show it (secrets in the query redacted).</summary>
    public static string TargetOf(HttpContext context) => Observability.SecretRedaction.Text(
        context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()?.RawTarget ?? context.Request.Path.Value ?? "/");

    /// <summary>
    /// The header fields of a response worth storing, one pair per field line, values untouched: hop-by-hop
    /// fields and those about this hop or this answer (Age, Date, X-Cache, …) are left out, and so is the
    /// <c>SideKick</c> the exchange put in front of the origin's Server (a hit puts its own there again).
    /// </summary>
    public static KeyValuePair<string, string>[] StoredHeaders(IHeaderDictionary headers)
    {
        var stored = new List<KeyValuePair<string, string>>();
        foreach (var (name, values) in headers)
        {
            if (!CachedResponse.KeepHeader(name))
            {
                continue;
            }

            var ours = string.Equals(name, HeaderNames.Server, StringComparison.OrdinalIgnoreCase) && values.Count > 0 && values[0] == "SideKick" ? 1 : 0;
            for (var i = ours; i < values.Count; i++)
            {
                stored.Add(new(name, values[i] ?? ""));
            }
        }

        return [.. stored];
    }

    /// <summary>
    /// Whether a 304 is about <paramref name="entry"/> (RFC 9111 §4.3.4): a strong ETag in it must be the entry's
    /// (strong comparison), a weak one the entry's by weak comparison, else a Last-Modified the entry's. A 304
    /// with no validator answers a request that was conditional on this entry alone, and confirms it.
    /// </summary>
    public static bool Names(CachedResponse entry, IReadOnlyList<KeyValuePair<string, string>> notModified)
    {
        string? Get(string name) => notModified.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;
        if (Get(HeaderNames.ETag) is { } etag)
        {
            var weak = etag.StartsWith("W/", StringComparison.Ordinal);
            return entry.ETag is { } stored && (weak
                ? string.Equals(Opaque(stored), Opaque(etag), StringComparison.Ordinal)
                : !stored.StartsWith("W/", StringComparison.Ordinal) && string.Equals(stored, etag, StringComparison.Ordinal));
        }

        if (Get(HeaderNames.LastModified) is { } lastModified)
        {
            return entry.Header(HeaderNames.LastModified) is { } stored &&
                   CachedResponse.HttpDate(stored) is { } storedDate && CachedResponse.HttpDate(lastModified) == storedDate;
        }

        return true;

        static string Opaque(string tag) => tag.StartsWith("W/", StringComparison.Ordinal) ? tag[2..] : tag;
    }

    /// <summary>
    /// Applies a 304's header fields to the stored ones (RFC 9111 §4.3.4: each field the 304 carries replaces
    /// the stored field of that name, values as the 304 sent them) and restarts the age clock. A 304 that answered a
    /// request with credentials makes the entry one filled with credentials (§3.5): it now stands on that requester's
    /// word. Otherwise an object read anonymously while public, then made private (same bytes, same ETag), was made
    /// fresh again by an authorised reader's 304 and served to anonymous clients, whom the origin now refuses.
    /// </summary>
    public CachedResponse Refresh(CachedResponse entry, IReadOnlyList<KeyValuePair<string, string>> notModified, DateTimeOffset requestTime, bool withCredentials)
    {
        var updates = notModified.Where(h => CachedResponse.KeepHeader(h.Key) &&
            !string.Equals(h.Key, HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase)).ToArray();
        var headers = entry.Headers.Where(h => !updates.Any(u => string.Equals(u.Key, h.Key, StringComparison.OrdinalIgnoreCase))).Concat(updates).ToArray();
        var responseTime = time.GetUtcNow();
        string? Get(string name) => notModified.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;
        var date = CachedResponse.HttpDate(Get(HeaderNames.Date)) ?? responseTime;
        return entry with
        {
            Headers = headers,
            ReceivedAt = responseTime,
            Date = date,
            InitialAge = CachePolicy.InitialAge(Get(HeaderNames.Age), date, requestTime, responseTime),
            FilledWithCredentials = entry.FilledWithCredentials || withCredentials,
        };
    }

    /// <summary>
    /// Keeps refreshed headers: in this process at once (so the next request sees them), and in the bucket
    /// for the other sidecars (a server-side copy onto itself with new metadata), at most once per
    /// <see cref="RefreshWriteInterval"/> for one key, and only onto the object the lookup found
    /// (<paramref name="storeETag"/>; none known: this process only). S3 copies at most 5 GiB in one request:
    /// a larger entry's refresh stays in this process, and other sidecars revalidate it themselves.
    /// </summary>
    public async Task UpdateMetadataAsync(string key, CachedResponse entry, string? storeETag)
    {
        if (_refreshed.Count > MaxRefreshed)
        {
            _refreshed.Clear(); // a bound, not an LRU
            _refreshWritten.Clear();
        }

        _refreshed[key] = entry;
        var serialized = entry.Serialize();
        if (storeETag is null || entry.Length > S3CacheStore.MaxCopyBytes || !CachedResponse.FitsInMetadata(serialized) || !MayWriteRefresh(key))
        {
            return;
        }

        try
        {
            // False: another version was stored meanwhile (or the entry evicted); its own metadata stays.
            await store.UpdateMetadataAsync(key, storeETag, new Dictionary<string, string> { ["sidekick"] = serialized }, CancellationToken.None);
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            // A failed refresh is not a store outage: this sidecar still has the refreshed headers in memory.
            metrics.StoreError(ex);
        }
    }

    /// <summary>Claims this key's refresh write, unless one was made (or is being made) within the interval.</summary>
    private bool MayWriteRefresh(string key)
    {
        var now = time.GetTimestamp();
        if (!_refreshWritten.TryGetValue(key, out var last))
        {
            return _refreshWritten.TryAdd(key, now);
        }

        return time.GetElapsedTime(last, now) >= RefreshWriteInterval && _refreshWritten.TryUpdate(key, now, last);
    }

    /// <summary>Whether the store may still hold an entry this sidecar evicted (see <see cref="_owed"/>).</summary>
    public bool IsOwed(string key) => _owed.ContainsKey(key); // lock-free; IsEmpty of an empty dictionary takes every lock

    /// <summary>
    /// Deletes again every entry whose eviction the store has not confirmed; one pass at a time, and another when keys
    /// were owed meanwhile (a pass works from a snapshot of them, and a request that owes keys during it finds it
    /// running).
    /// </summary>
    public async Task PayOwedEvictionsAsync()
    {
        if (_owed.IsEmpty || Interlocked.Exchange(ref _payingOwed, 1) != 0)
        {
            return;
        }

        long owedBefore;
        try
        {
            do
            {
                owedBefore = Volatile.Read(ref _owedAdded);
                foreach (var key in _owed.Keys)
                {
                    if (!health.Online)
                    {
                        return;
                    }

                    await EvictAsync(key);
                }
            }
            while (Volatile.Read(ref _owedAdded) != owedBefore);
        }
        finally
        {
            Volatile.Write(ref _payingOwed, 0);
        }

        // Owed after the last check, before the pass let go: their request's call found it still running.
        if (Volatile.Read(ref _owedAdded) != owedBefore)
        {
            _ = Task.Run(PayOwedEvictionsAsync);
        }
    }

    // How many keys were ever added to _owed: tells a pass whether more came while it ran.
    private long _owedAdded;

    private void Owe(string key)
    {
        if (_owed.Count < MaxOwedEvictions && _owed.TryAdd(key, 0))
        {
            Interlocked.Increment(ref _owedAdded);
        }
    }

    /// <summary>
    /// Stops using this sidecar's knowledge of an entry that is going: it is owed until the store confirms its delete,
    /// its refreshed headers are dropped, and a fill of it still uploading holds the version evicted: it must neither
    /// land after the eviction nor answer another request from its spool (its readers keep the bytes they already read).
    /// With <paramref name="fillsToo"/> false (a faulty stored object: <see cref="EvictFaultyAsync"/>), a fill of it is
    /// the origin's current version, not the object evicted, and goes on.
    /// </summary>
    private void Forget(string key, bool fillsToo = true)
    {
        Owe(key);
        _refreshed.TryRemove(key, out _);
        _refreshWritten.TryRemove(key, out _);
        if (fillsToo)
        {
            // The entry's own fill and those of its variants (a response with Vary fills under a variant key).
            fills.AbandonUnder(key, FillAbandonReason.ObjectChanged, "its entry was evicted (an unsafe request to it succeeded, or the origin no longer has it)");
        }
    }

    /// <summary>The longest one eviction (its variants' listings and deletes, then the entry's delete) takes before it is left to the owed deletes.</summary>
    internal static TimeSpan EvictionTimeout { get; } = TimeSpan.FromSeconds(30);

    public Task EvictAsync(string key) => EvictAsync(key, fillsToo: true);

    private async Task EvictAsync(string key, bool fillsToo)
    {
        Forget(key, fillsToo);
        using var timeout = new CancellationTokenSource(EvictionTimeout);
        try
        {
            await store.DeleteEntryAsync(key, timeout.Token);
            _owed.TryRemove(key, out _);
            metrics.Evicted();
        }
        catch (OperationCanceledException ex) when (timeout.IsCancellationRequested)
        {
            // Slow, not failed: an entry with very many Vary variants takes a listing and a delete per thousand of
            // them. That is no reason to take the store offline (lookups have their own tolerance, CacheHealth); the key
            // stays owed (never served from the bucket) and the deletes go on in the background, each pass from where
            // the last one stopped (what it deleted is gone from the next listing).
            metrics.StoreError(CacheStoreFailure.Of(ex, EvictionTimeout));
            _ = Task.Run(PayOwedEvictionsAsync);
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            health.MarkOffline(ex);
        }
    }

    /// <summary>
    /// How long a write's answer waits for the deletes of the entries it invalidated, all together. The memory of the
    /// invalidation is in place before any delete starts and the keys are owed, so this sidecar serves none of them
    /// meanwhile; the wait only lets the other sidecars sharing the bucket see the delete before the writer has its
    /// answer. A store that stopped answering held every write in flight for the whole <see cref="EvictionTimeout"/>
    /// (30 s) although it was taken offline after 5 s, uploads that never touch the cache included.
    /// </summary>
    internal static TimeSpan EvictionWait { get; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// An unsafe request's non-error answer (RFC 9111 §4.4): what it invalidates is remembered (<see cref="InvalidationMemory"/>),
    /// then its entries are deleted from the bucket, each key once, the answer waiting at most <see cref="EvictionWait"/>:
    /// a delete still running goes on, and the keys not reached are owed (deleted in the background). The keys a
    /// DeleteObjects body named are owed at once: up to 1,000 of them, two store requests each, would hold every batch
    /// of a recursive delete for the whole wait.
    /// </summary>
    public async Task InvalidateAsync(WriteInvalidation what)
    {
        var now = time.GetUtcNow();
        _invalidated.RememberPaths(what.Paths, now);
        if (what.Bucket is { } bucket)
        {
            _invalidated.RememberBucket(bucket, now);
            metrics.BucketInvalidated(what.BodyUnread);
        }

        var owed = what.OwedKeys.Count > 0;
        foreach (var key in what.OwedKeys)
        {
            Forget(key);
        }

        var started = time.GetTimestamp();
        foreach (var key in what.Keys)
        {
            var left = EvictionWait - time.GetElapsedTime(started);
            if (!health.Online || left <= TimeSpan.Zero)
            {
                Forget(key); // owed: deleted once the store answers (PayOwedEvictionsAsync)
                owed = true;
                continue;
            }

            // A delete the wait gives up on is not cancelled: the key stays owed until it ends.
            await EvictAsync(key).WaitAsync(left, time).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        if (owed && health.Online)
        {
            _ = Task.Run(PayOwedEvictionsAsync);
        }
    }

    /// <summary>
    /// Whether <paramref name="entry"/>, found for <paramref name="request"/> (in the bucket or in a fill running here), was
    /// received before this sidecar invalidated the request's path, or its bucket.
    /// </summary>
    public bool InvalidatedSince(HttpRequest request, CachedResponse entry) => _invalidated.Covers(request, entry.ReceivedAt);

    /// <summary>The marker at the plain key that names the Vary headers, so a lookup finds the variant.</summary>
    private void PutVaryMarker(string key, string[] varyNames)
    {
        var marker = new Dictionary<string, string> { ["sidekick-vary"] = string.Join(',', varyNames) };
        _ = Task.Run(async () =>
        {
            try
            {
                await store.PutAsync(key, ReadOnlyMemory<byte>.Empty, marker, CancellationToken.None);
            }
            catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
            {
                health.MarkOffline(ex);
            }
        });
    }

    /// <summary>The stored entry, or the headers a later 304 refreshed when those are newer (same object only).</summary>
    private CachedResponse Newest(string key, CachedResponse stored) =>
        _refreshed.TryGetValue(key, out var refreshed) && refreshed.ReceivedAt > stored.ReceivedAt &&
        refreshed.ETag == stored.ETag && refreshed.Length == stored.Length
            ? refreshed
            : stored;
}

/// <summary>
/// A stored entry found for a request, the key it is stored under, and the store's ETag of the object the lookup
/// saw (null for an entry read from a fill in progress): the object read next must be that one (see
/// StoredResponseWriter). <see cref="Opened"/> is that object opened (whole, or the range the request asked) when the
/// lookup was a GET; whoever looked it up disposes it once the request is answered (served from, or not).
/// </summary>
internal readonly record struct CacheLookup(string Key, CachedResponse Entry, string? StoreETag = null, StoredObject? Opened = null);
