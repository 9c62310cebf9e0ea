using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// The shared S3 cache in front of the proxy (see docs/cache.md for the rules): the flow of one request and
/// the RFC 9111 decisions, through <see cref="CachePolicy"/>. GET and HEAD are looked up; misses are filled
/// while they stream to the client; stored responses are served with a correct Age and confirmed with the
/// backend whenever RFC 9111 or the filler's credentials demand it; unsafe methods invalidate. Every
/// request to a backend goes through the normal forwarding path (<see cref="ICacheOrigin"/>), watched by an
/// <see cref="OriginAnswer"/>; storing and serving are <see cref="CacheEntries"/> and
/// <see cref="StoredResponseWriter"/>. Store trouble never fails a request the backends can serve: it only
/// bypasses the cache.
/// </summary>
internal sealed class ResponseCache : IDisposable
{
    /// <summary>The cache's outcome for a request (HIT, MISS, REVALIDATED, BYPASS) on every response it saw.</summary>
    public const string CacheHeader = "X-Cache";

    /// <summary>How long a request waits for someone else's fill of the same entry before asking the origin itself.</summary>
    private static readonly TimeSpan FillWait = TimeSpan.FromMinutes(5);

    /// <summary>How long a fill's slot outlives its upload (see MissAsync).</summary>
    private static readonly TimeSpan SlotGrace = TimeSpan.FromSeconds(5);

    private readonly CacheOptions _options;
    private readonly S3CacheStore _store;
    private readonly CacheHealth _health;
    private readonly CacheEntries _entries;
    private readonly StoredResponseWriter _writer;
    private readonly TimeProvider _time;
    private readonly CacheFills _fills;
    private readonly FillLeases _leases;
    private readonly ConcurrentDictionary<string, FillSlot> _pending = new();

    // The copies of DeleteObjects bodies in progress, together (the replay buffers' kind of budget, a budget of its own).
    private readonly Forwarding.ReplayBudget _deleteBodies = new(DeleteObjects.AllCopiesBytes);

    public ResponseCache(CacheOptions options, TimeProvider time)
    {
        _options = options;
        _time = time;
        _store = new S3CacheStore(options);
        Metrics = new CacheMetrics();
        _health = new CacheHealth(_store, Metrics, options.HealthInterval, time);
        _fills = new CacheFills(options, _store, Metrics, time);
        _leases = new FillLeases(options, _store, Metrics, time);
        _entries = new CacheEntries(options, _store, _health, _fills, Metrics, time);
        _health.Watch(transition =>
        {
            if (transition.Healthy)
            {
                _ = Task.Run(_entries.PayOwedEvictionsAsync);
                _ = Task.Run(_leases.LearnAsync);
            }
        });
        _writer = new StoredResponseWriter(options, _store, _entries, _health, Metrics, time);
    }

    public CacheMetrics Metrics { get; }

    /// <summary>The bucket's folder the entries are in (<see cref="CacheNamespace"/>).</summary>
    public string Namespace => _options.Namespace ?? "";

    public CacheHealth Health => _health;

    /// <summary>Responses being written to the store now (for /v1/state and the metrics).</summary>
    public int FillsInFlight => _fills.InFlight;

    /// <summary>The fills in flight (abandonment reasons, spool use).</summary>
    public CacheFills Fills => _fills;

    /// <summary>The fill leases shared with the other sidecars of the bucket.</summary>
    public FillLeases Leases => _leases;

    /// <summary>A body served from the cache broke midway (key, offset, how it went on, why): for the --log line.</summary>
    public event Action<string, long, BrokenRead, string>? StoredReadBroken
    {
        add => _writer.ReadBroken += value;
        remove => _writer.ReadBroken -= value;
    }

    /// <summary>An entry whose stored object did not hold the body its metadata describes was evicted (key, what was wrong): for the --log line.</summary>
    public event Action<string, string>? FaultyEntryEvicted
    {
        add => _entries.FaultyEntryEvicted += value;
        remove => _entries.FaultyEntryEvicted -= value;
    }

    /// <summary>
    /// A fill lost its lease race after the origin's answer was already streaming here (the request target, secrets
    /// redacted): the object came from the origin twice and the other sidecar stores it. For the --log line; counted
    /// as fetched_twice.
    /// </summary>
    public event Action<string>? FetchedTwice;

    public async Task HandleAsync(HttpContext context, ICacheOrigin origin)
    {
        var request = context.Request;
        if (!HttpMethods.IsGet(request.Method) && !HttpMethods.IsHead(request.Method))
        {
            WriteInvalidation? invalidation = null;
            using (var deletes = DeleteObjects.Watch(request, _deleteBodies))
            {
                await origin.ForwardAsync(context);
                if (CachePolicy.IsUnsafe(request.Method) && CachePolicy.InvalidatesOn(context.Response.StatusCode))
                {
                    invalidation = Invalidation.Of(context, deletes);
                }
            }

            if (invalidation is not null)
            {
                await _entries.InvalidateAsync(invalidation);
            }

            return;
        }

        var requestControl = RequestControl(request);
        // A GET or HEAD with content (search APIs put their query there, RFC 9110 §9.3.1 gives it no meaning): the
        // entry's name does not cover the content, so the request neither reads an entry nor fills one.
        if (requestControl.Has("no-store") || context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody == true)
        {
            await BypassAsync(context, origin, requestControl);
            return;
        }

        // A forwarding or routing field the origin may answer by, or an SSE-C key (BypassingFields).
        if (BypassingFields.Find(request.Headers) is { } bypass)
        {
            _fills.NotStored(CacheEntries.TargetOf(context), bypass.Reason, bypass.Detail);
            await BypassAsync(context, origin, requestControl);
            return;
        }

        var key = CacheKey.For(context);
        // A fill of this entry runs here and its spool already holds what is asked: it answers, without a store
        // lookup. A large entry takes the store a while to take (a 2 GiB one over a minute on s3rver), and a store busy
        // with that very upload can be too slow to answer a lookup in time, which would send the request to the origin.
        var running = _fills.Running(key);
        if (running is not null && HoldsWhatIsAsked(running, request) && await ReadFillAsync(context, origin, running, requestControl))
        {
            return;
        }

        if (!_health.Online)
        {
            await BypassAsync(context, origin, requestControl);
            return;
        }

        if (running is { FromPieces: true } && request.Headers.Range.Count > 0)
        {
            // Another range of an object whose ranges are being combined here: the store has no newer version of it
            // (a lookup found none when this combination began), so its lookup is skipped. An S3 client reading 1 GiB
            // in 8 MiB parts asked the store 128 times for nothing, while the store was taking this very object.
            await MissAsync(context, origin, key, requestControl, leaseAhead: null);
            return;
        }

        // A whole GET that misses reads the fill lease first on some stores: that read goes beside the lookup (a
        // Range or a conditional is one of ClientConditionals' fields, and such a miss takes no lease).
        var leaseAhead = HttpMethods.IsGet(request.Method) && !ClientConditionals.AnyIn(request) && !_pending.ContainsKey(key)
            ? _leases.ReadAhead(key, context.RequestAborted)
            : null;
        CacheLookup? found;
        try
        {
            found = await _entries.FindAsync(key, request, context.RequestAborted);
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !context.RequestAborted.IsCancellationRequested)
        {
            _health.LookupFailed(ex, _options.StoreTimeout);
            if (_health.Online && request.Headers.Range.Count > 0 && _fills.Running(key) is { FromPieces: true })
            {
                // One of a burst of parallel ranges, whose lookup the store failed (a timeout, a 503 SlowDown) while
                // another range's found nothing and began combining the object: its bytes are the object's all the
                // same, and left out they would leave the combination a hole it never fills.
                await MissAsync(context, origin, key, requestControl, leaseAhead: null);
                return;
            }

            await BypassAsync(context, origin, requestControl);
            return;
        }

        if (found is { } hit)
        {
            _leases.Found(key);
            using (hit.Opened)
            {
                await HitAsync(context, origin, hit, requestControl);
            }
        }
        else
        {
            await MissAsync(context, origin, key, requestControl, leaseAhead);
        }
    }

    public void Dispose()
    {
        _health.Dispose();
        _fills.Dispose();
        _store.Dispose();
        Metrics.Dispose();
    }

    private static CacheControl RequestControl(HttpRequest request)
    {
        var control = request.Headers.CacheControl;
        // HTTP/1.0 Pragma: no-cache counts only without Cache-Control (RFC 9111 §5.4).
        return CacheControl.Parse(control.Count == 0 && request.Headers.Pragma.ToString().Contains("no-cache", StringComparison.OrdinalIgnoreCase) ? "no-cache" : control);
    }

    /// <summary>
    /// The options an entry for <paramref name="request"/> is judged by. With SIDEKICK_CACHE_SHARE_PUBLIC, a response
    /// marked public is shared even when filled with credentials; but where the query carries response-cache-control
    /// (S3 and MinIO let a signed request choose the response's Cache-Control), it is the requester, not the object's
    /// owner, who marked it public: any reader could presign such a URL and so publish a private object, to anyone,
    /// for as long as the entry lives. The query is part of the entry's name, so every request for it carries it.
    /// </summary>
    private CacheOptions PolicyFor(HttpRequest request) =>
        _options.SharePublic && request.QueryString.HasValue && request.Query.ContainsKey("response-cache-control")
            ? _options with { SharePublic = false }
            : _options;

    private async Task BypassAsync(HttpContext context, ICacheOrigin origin, CacheControl requestControl)
    {
        Metrics.Bypass();
        // only-if-cached (§5.2.1.7): what the cache cannot answer (no-store, content, the store offline or unreadable)
        // gets a 504, never the origin.
        if (requestControl.Has("only-if-cached"))
        {
            AnswerGatewayTimeout(context);
            return;
        }

        context.Response.Headers[CacheHeader] = "BYPASS";
        await origin.ForwardAsync(context);
    }

    /// <summary>The request passes to the origin unchanged and nothing is stored: a miss.</summary>
    private Task PassAsync(HttpContext context, ICacheOrigin origin)
    {
        Metrics.Miss();
        context.Response.Headers[CacheHeader] = "MISS";
        return origin.ForwardAsync(context);
    }

    private async Task MissAsync(HttpContext context, ICacheOrigin origin, string key, CacheControl requestControl, LeaseReadAhead? leaseAhead)
    {
        // Counted as a miss only when the origin is asked for the body: a request this sidecar answers from a fill, or
        // from the store once another sidecar's fill landed, was found in the cache after all (a HIT or REVALIDATED).
        var request = context.Request;
        if (requestControl.Has("only-if-cached"))
        {
            Metrics.Miss();
            AnswerGatewayTimeout(context);
            return;
        }

        // A fill of this entry may be running here: read it rather than ask the origin again (a HEAD, a range or
        // the client's own conditional included: they are answered from the fill's entry as from a stored one).
        if (_pending.TryGetValue(key, out var filling) &&
            (await JoinAsync(context, origin, filling, requestControl) || await FromStoreAsync(context, origin, key, requestControl, filling)))
        {
            return;
        }

        // Otherwise HEAD, ranges and the client's own conditionals are answered by the backend. A 206 it answers is
        // kept as a piece of the object, combined with the other ranges S3 clients read in parallel until they
        // cover it (§3.4); a 200 is stored whole. Neither waits in a slot: other ranges are other requests.
        if (HttpMethods.IsHead(request.Method))
        {
            await PassAsync(context, origin);
            return;
        }

        if (ClientConditionals.AnyIn(request))
        {
            Metrics.Miss();
            await FetchAndFillAsync(context, origin, key, requestControl);
            return;
        }

        var slot = new FillSlot();
        while (_pending.GetOrAdd(key, slot) is var running && running != slot)
        {
            if (running.Head.Task is { IsCompleted: true, Result: null or { IsCommitted: true } or { Abandoned: true } })
            {
                // That fill is over (and what it stored was not found above): this request fills afresh, unless
                // another one took the slot first; then look again.
                if (_pending.TryUpdate(key, slot, running))
                {
                    break;
                }

                continue;
            }

            // Nothing to read here (not storable, or not for this requester): the store, else the origin.
            if (!await JoinAsync(context, origin, running, requestControl) && !await FromStoreAsync(context, origin, key, requestControl, running))
            {
                await PassAsync(context, origin);
            }

            return;
        }

        CacheFill? fill = null;
        try
        {
            // Another sidecar sharing the bucket may be filling this entry: wait for it to reach the store rather
            // than fetch the object from the origin again (FillLeases says for how long that is worth it).
            var claim = await _leases.ClaimAsync(key, leaseAhead, context.RequestAborted);
            if (await FromStoreAfterWaitAsync(context, origin, key, requestControl, claim))
            {
                return;
            }

            LeaseSettlement? settlement = null;
            if (claim is { Kind: FillClaimKind.Holding, ReadBack: { } readBack })
            {
                settlement = new LeaseSettlement(_leases.LostAsync(readBack));
                settlement.Settled = SettleLeaseAsync(settlement, claim.LeaseKey!, slot);
            }
            else if (claim.Kind == FillClaimKind.Holding)
            {
                _leases.Hold(claim.LeaseKey!, slot.Head.Task);
            }

            Metrics.Miss();
            fill = await FetchAndFillAsync(context, origin, key, requestControl, slot, settlement: settlement);
            if (settlement is { YieldedAtHead: true })
            {
                // The lease's read-back named another sidecar before the origin answered: its fill is waited for, as
                // if its lease had been seen first, and the origin's answer was left unread.
                context.Response.Clear();
                var waited = await _leases.YieldAsync(claim.LeaseKey!, claim.ReadBack!, context.RequestAborted);
                if (await FromStoreAfterWaitAsync(context, origin, key, requestControl, waited))
                {
                    return;
                }

                fill = await FetchAndFillAsync(context, origin, key, requestControl, slot);
            }

            if (!context.RequestAborted.IsCancellationRequested)
            {
                _leases.Answered(key, storable: fill is not null);
            }
        }
        finally
        {
            slot.Head.TrySetResult(null);
            // Others read the spool until the store has the entry (or the fill is given up).
            if (fill is null)
            {
                _pending.TryRemove(new KeyValuePair<string, FillSlot>(key, slot));
            }
            else
            {
                // Kept a moment past the commit: a request whose store lookup raced the commit still finds it here
                // (and is sent to the store) rather than asking the origin again.
                _ = fill.Upload.ContinueWith(async _ =>
                {
                    await Task.Delay(SlotGrace, _time);
                    _pending.TryRemove(new KeyValuePair<string, FillSlot>(key, slot));
                }, TaskScheduler.Default);
            }
        }
    }

    /// <summary>
    /// After waiting for another sidecar's fill, or told by its lease that it just stored the entry: the entry from
    /// the store, when it is there (true: the request is answered). False at once for any other claim.
    /// </summary>
    private async Task<bool> FromStoreAfterWaitAsync(HttpContext context, ICacheOrigin origin, string key, CacheControl requestControl, FillClaim claim)
    {
        if (claim.Kind is not (FillClaimKind.OtherEnded or FillClaimKind.JustStored))
        {
            return false;
        }

        // Counted once the entry is found, before it is sent: a client holding the whole response sees the count.
        var found = claim.Kind == FillClaimKind.JustStored ? FillWaitOutcome.JustStored : FillWaitOutcome.Stored;
        var stored = await FromStoreAsync(context, origin, key, requestControl, onFound: () => Metrics.FillWait(found));
        if (!stored)
        {
            Metrics.FillWait(FillWaitOutcome.NotStored);
        }

        return stored;
    }

    /// <summary>
    /// Once the lease's read-back is in (<see cref="LeaseSettlement"/>): this sidecar holds the lease and renews it,
    /// or another's write stayed, and a fill already streaming here leaves the upload to it.
    /// </summary>
    private async Task SettleLeaseAsync(LeaseSettlement settlement, string leaseKey, FillSlot slot)
    {
        if (!await settlement.Lost)
        {
            _leases.Hold(leaseKey, slot.Head.Task);
            return;
        }

        var streaming = settlement.StreamingWhenLost();
        Metrics.FillRaceLost(fetchedTwice: streaming);
        if (streaming)
        {
            if (await slot.Head.Task is { } fill)
            {
                fill.LeaveUploadToAnother();
                FetchedTwice?.Invoke(fill.Target);
            }
        }
    }

    /// <summary>
    /// After a fill of the entry ended here (committed, or it stored nothing): the store may have the entry now.
    /// True when it answered the request.
    /// </summary>
    private Task<bool> FromStoreAsync(HttpContext context, ICacheOrigin origin, string key, CacheControl requestControl, FillSlot slot) =>
        !slot.Head.Task.IsCompleted || slot.Head.Task.Result is { IsCommitted: false }
            ? Task.FromResult(false)
            : FromStoreAsync(context, origin, key, requestControl);

    /// <summary>After a fill ended (here, or another sidecar's this request waited for): its entry, when the store has one for this request.</summary>
    private async Task<bool> FromStoreAsync(HttpContext context, ICacheOrigin origin, string key, CacheControl requestControl, Action? onFound = null)
    {
        CacheLookup? stored = null;
        try
        {
            stored = await _entries.FindAsync(key, context.Request, context.RequestAborted);
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !context.RequestAborted.IsCancellationRequested)
        {
            _health.LookupFailed(ex, _options.StoreTimeout);
        }

        if (stored is not { } hit)
        {
            return false;
        }

        onFound?.Invoke();
        using (hit.Opened)
        {
            await HitAsync(context, origin, hit, requestControl);
        }

        return true;
    }

    /// <summary>
    /// Serves a request from the whole-response fill a miss here started for its entry, once that fill's head is
    /// known: from its spool as the body arrives (<see cref="ReadFillAsync"/>). False, with nothing sent, when the
    /// fill may not answer it.
    /// </summary>
    private async Task<bool> JoinAsync(HttpContext context, ICacheOrigin origin, FillSlot slot, CacheControl requestControl)
    {
        CacheFill? fill;
        try
        {
            fill = await slot.Head.Task.WaitAsync(FillWait, context.RequestAborted);
        }
        catch (TimeoutException)
        {
            return false;
        }

        // A combination of ranges may never cover the object: a reader of it would wait for bytes that never come. Nor
        // is a fill joined that has sent nothing for a while (its first client stopped reading): the origin answers.
        return fill is { FromPieces: false } && (fill.BodyComplete || fill.IdleFor < StoredResponseWriter.FillReadIdleTimeout) &&
               await ReadFillAsync(context, origin, fill, requestControl);
    }

    /// <summary>
    /// Whether a fill's spool holds every byte the request asks for (its one range, else the whole object; nothing
    /// for a HEAD): reading them depends on no origin, client or store. A range may lie past a gap in ranges that
    /// are being combined (an S3 client that read a Parquet footer, read again by the next task).
    /// </summary>
    private static bool HoldsWhatIsAsked(CacheFill fill, HttpRequest request)
    {
        if (HttpMethods.IsHead(request.Method))
        {
            return true;
        }

        var (from, to, partial, _) = StoredResponseWriter.RangeOf(request, fill.Entry);
        return partial ? fill.SpooledFrom(from) > to : fill.Written >= fill.Length;
    }

    /// <summary>
    /// Serves a request from the spool of a fill of its entry that runs here. Only when the entry may be served
    /// without asking the origin, or after the requester's own conditional request came back 304 (filled with
    /// credentials, or stale); false otherwise, with nothing sent.
    /// </summary>
    private async Task<bool> ReadFillAsync(HttpContext context, ICacheOrigin origin, CacheFill fill, CacheControl requestControl)
    {
        if (fill.Abandoned || fill.IsCommitted)
        {
            return false; // nothing to read, or the store has it now (FromStoreAsync)
        }

        var entry = fill.Entry;
        // A fill under another spelling of a path a write invalidated since (its own key's fill was abandoned then).
        if (!CachePolicy.VarySelects(entry, context.Request.Headers) || _entries.InvalidatedSince(context.Request, entry))
        {
            return false;
        }

        var responseControl = entry.CacheControl();
        var lookup = new CacheLookup(fill.Key, entry);
        switch (CachePolicy.Decide(entry, requestControl, responseControl, _time.GetUtcNow(), PolicyFor(context.Request), CachePolicy.CarriesCredentials(context.Request)))
        {
            case CacheDecision.Serve:
                return await _writer.ServeAsync(context, origin, lookup, "HIT", fill);
            case CacheDecision.Revalidate when !requestControl.Has("only-if-cached") && (entry.ETag is not null || entry.LastModified is not null) &&
                                               !ClientConditionals.HasOwnValidators(context.Request):
                // Filled with credentials (or stale at once): the requester's own conditional request decides, as
                // for a stored entry, and a 304 is served from the spool.
                await RevalidateAsync(context, origin, lookup, requestControl, responseControl, fill);
                return true;
            default:
                return false;
        }
    }

    /// <summary>
    /// Forwards the request and stores the response while it streams to the client, when it may be stored. The
    /// upload goes on after the client has its body; the fill is returned (null when nothing is stored).
    /// </summary>
    /// <param name="settlement">Decides at the origin's head whether the request yields to another sidecar's fill (the answer is then taken, unread).</param>
    private async Task<CacheFill?> FetchAndFillAsync(
        HttpContext context, ICacheOrigin origin, string key, CacheControl requestControl, FillSlot? slot = null, bool gatewayTimeoutOnNoAnswer = false,
        LeaseSettlement? settlement = null)
    {
        var requestTime = _time.GetUtcNow();
        var answer = new OriginAnswer(
            c => _entries.StartFill(c, key, requestControl, requestTime),
            takeOver: status => status == 0 ? gatewayTimeoutOnNoAnswer : settlement?.YieldAtHead() == true)
        {
            ContinueWithoutClient = writer => FillContinuation.Start(context, origin, writer, _fills),
            HandOffWhenHeldBack = (c, writer) => FillHandOff.Watch(c, writer, origin, _fills, _time),
            HeadSeen = slot is null ? null : fill =>
            {
                // Set before any body byte: a body that is in before the lease's read-back must not be uploaded first.
                fill?.UploadAfter(settlement?.Settled);
                slot.Head.TrySetResult(fill);
            },
        };
        try
        {
            await PassWatchedAsync(context, origin, answer);
        }
        catch
        {
            // Whatever broke the exchange, its fill ends here (given up, its slot and spool freed), and the requests
            // waiting for this one's head stop waiting.
            answer.Finish(context);
            slot?.Head.TrySetResult(null);
            throw;
        }

        if (answer is { TookOver: true, Status: 0 })
        {
            AnswerGatewayTimeout(context);
        }

        return answer.Finish(context);
    }

    /// <summary>§4.2.4: no backend answered, and the stored response must not be served stale.</summary>
    private static void AnswerGatewayTimeout(HttpContext context)
    {
        context.Response.Clear();
        context.Response.StatusCode = StatusCodes.Status504GatewayTimeout;
        context.Response.Headers[CacheHeader] = "MISS";
    }

    private static Task PassWatchedAsync(HttpContext context, ICacheOrigin origin, OriginAnswer answer)
    {
        context.Response.Headers[CacheHeader] = "MISS";
        return origin.ForwardAsync(context, answer);
    }

    private async Task HitAsync(HttpContext context, ICacheOrigin origin, CacheLookup hit, CacheControl requestControl)
    {
        var request = context.Request;
        var responseControl = hit.Entry.CacheControl();
        var credentials = CachePolicy.CarriesCredentials(request);
        var now = _time.GetUtcNow();
        var decision = CachePolicy.Decide(hit.Entry, requestControl, responseControl, now, PolicyFor(request), credentials);
        if (decision == CacheDecision.Revalidate && requestControl.Has("only-if-cached"))
        {
            // §5.2.1.7: nothing may be served without asking the backend, and the client forbade asking.
            AnswerGatewayTimeout(context);
            return;
        }

        switch (decision)
        {
            case CacheDecision.Serve:
                if (await _writer.ServeAsync(context, origin, hit, "HIT"))
                {
                    return;
                }

                break;
            case CacheDecision.ServeAndRevalidate:
                var background = StandInRequest.From(context);
                if (await _writer.ServeAsync(context, origin, hit, "HIT"))
                {
                    _ = Task.Run(() => RevalidateInBackgroundAsync(origin, background, hit));
                    return;
                }

                break;
            default:
                await RevalidateAsync(context, origin, hit, requestControl, responseControl);
                return;
        }

        // The store could not be read: the backend answers instead.
        await BypassAsync(context, origin, requestControl);
    }

    /// <summary>
    /// Asks the backend whether the stored response is still good, with the requester's own request made
    /// conditional: a 304 both confirms the entry and proves the requester may read it. A new 200 replaces
    /// the entry as it streams to the client; 404 and 410 evict it; a 5xx may be answered from a stale entry
    /// (stale-if-error); anything else passes through, never cached bytes.
    /// </summary>
    /// <param name="fill">A fill of the entry still running here: the body comes from its spool, and nothing is
    /// written back to the store (the entry is not there yet).</param>
    private async Task RevalidateAsync(
        HttpContext context, ICacheOrigin origin, CacheLookup hit, CacheControl requestControl, CacheControl responseControl, CacheFill? fill = null)
    {
        var entry = hit.Entry;
        var request = context.Request;
        var requestTime = _time.GetUtcNow();
        var staleIfError = CachePolicy.MayServeStaleOnError(entry, requestControl, responseControl, requestTime, PolicyFor(request));
        // §4.2.4: an entry that must not be served stale gets a 504 when no backend answers at all.
        var gatewayTimeout = CachePolicy.MustNotServeStale(responseControl);
        if (ClientConditionals.HasOwnValidators(request))
        {
            // The client validates its own copy: its request goes to the origin as it came (a signed request must
            // stay byte for byte what was signed); a full 200 replaces the entry. An entry with no validator
            // goes the way below, which adds nothing to the request either.
            await FetchAndFillAsync(context, origin, hit.Key, requestControl, gatewayTimeoutOnNoAnswer: gatewayTimeout);
            return;
        }

        var answer = new OriginAnswer(
            c => _entries.StartFill(c, hit.Key, requestControl, requestTime),
            takeOver: status => status == StatusCodes.Status304NotModified || (staleIfError && status is >= 500 or 0) || (gatewayTimeout && status == 0))
        {
            ContinueWithoutClient = writer => FillContinuation.Start(context, origin, writer, _fills),
            HandOffWhenHeldBack = (c, writer) => FillHandOff.Watch(c, writer, origin, _fills, _time),
        };
        var conditionals = ClientConditionals.MakeConditional(request, entry);
        try
        {
            context.Response.Headers[CacheHeader] = "MISS";
            await origin.ForwardAsync(context, answer);
        }
        catch
        {
            answer.Finish(context); // a fill the exchange had started is given up, not left holding its slot
            throw;
        }
        finally
        {
            conditionals.Restore(request);
        }

        if (answer.TookOver && answer.Status == StatusCodes.Status304NotModified && !CacheEntries.Names(entry, answer.Headers))
        {
            // §4.3.4: a 304 whose validator names another version updates nothing; the client gets the origin's
            // current response instead of the entry.
            context.Response.Clear();
            await _entries.EvictAsync(hit.Key);
            await BypassAsync(context, origin, requestControl);
            return;
        }

        if (answer.TookOver && answer.Status == StatusCodes.Status304NotModified)
        {
            var refreshed = _entries.Refresh(entry, answer.Headers, requestTime, CachePolicy.CarriesCredentials(request));
            // A 304 whose fields now say no-store or private (a shared cache keeps neither): the requester it answered
            // gets the entry this once, and the entry goes.
            var keep = CachePolicy.MayKeep(refreshed.CacheControl());
            if (fill is null && keep)
            {
                _ = Task.Run(() => _entries.UpdateMetadataAsync(hit.Key, refreshed, hit.StoreETag));
            }

            context.Response.Clear();
            // A fill that ended meanwhile has handed its body to the store: read it there.
            var served = await _writer.ServeAsync(context, origin, hit with { Entry = refreshed }, "REVALIDATED", fill) ||
                         (fill is { IsCommitted: true } && await _writer.ServeAsync(context, origin, hit with { Entry = refreshed }, "REVALIDATED"));
            if (!keep)
            {
                await _entries.EvictAsync(hit.Key);
            }

            if (served)
            {
                return;
            }

            await BypassAsync(context, origin, requestControl);
            return;
        }

        if (answer.TookOver && !staleIfError)
        {
            // No answer at all for an entry that must not be served stale.
            AnswerGatewayTimeout(context);
            return;
        }

        if (answer.TookOver)
        {
            // A 5xx or no answer at all, and the entry allows stale-if-error.
            context.Response.Clear();
            if (await _writer.ServeAsync(context, origin, hit, "HIT", fill))
            {
                return;
            }

            await BypassAsync(context, origin, requestControl);
            return;
        }

        if (answer.Status is 404 or 410 && answer.Fill is null)
        {
            // Gone, and not stored in its place (a 404 with explicit freshness is, §3): the old entry goes.
            await _entries.EvictAsync(hit.Key);
        }
        else if (HttpMethods.IsHead(request.Method) && answer.Status == StatusCodes.Status200OK &&
                 !CacheEntries.Names(entry, CacheEntries.StoredHeaders(context.Response.Headers)))
        {
            // §4.3.5: a HEAD's 200 showing another version than the stored GET's (its ETag or Last-Modified) says the
            // stored body is not the current one; a HEAD brings no body to replace it with, so it goes.
            await _entries.EvictAsync(hit.Key);
        }

        answer.Finish(context);
    }

    private async Task RevalidateInBackgroundAsync(ICacheOrigin origin, StandInRequest background, CacheLookup hit)
    {
        if (hit.Entry.ETag is null && hit.Entry.LastModified is null)
        {
            return;
        }

        var context = background.Revalidating(hit.Entry);
        var requestTime = _time.GetUtcNow();
        // There is no client to answer: every answer is taken over and nothing is copied.
        var answer = new OriginAnswer(startFill: null, takeOver: static _ => true);
        await origin.ForwardAsync(context, answer);
        var refreshed = answer.Status == StatusCodes.Status304NotModified && CacheEntries.Names(hit.Entry, answer.Headers)
            ? _entries.Refresh(hit.Entry, answer.Headers, requestTime, CachePolicy.CarriesCredentials(context.Request))
            : null;
        if (refreshed is not null && CachePolicy.MayKeep(refreshed.CacheControl()))
        {
            await _entries.UpdateMetadataAsync(hit.Key, refreshed, hit.StoreETag);
            Metrics.BackgroundRevalidation(BackgroundOutcome.Confirmed);
        }
        else if (answer.Status is 200 or 206 or 304 or 404 or 410)
        {
            // Changed or gone, a 304 naming another version, or one that makes the entry no-store or private: the next
            // request fetches what the origin has now.
            await _entries.EvictAsync(hit.Key);
            Metrics.BackgroundRevalidation(BackgroundOutcome.Changed);
        }
        else
        {
            Metrics.BackgroundRevalidation(BackgroundOutcome.Failed);
        }
    }
}

/// <summary>A miss being fetched: completes with its fill once the origin's head is known (null: nothing stored).</summary>
internal sealed class FillSlot
{
    public TaskCompletionSource<CacheFill?> Head { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}
