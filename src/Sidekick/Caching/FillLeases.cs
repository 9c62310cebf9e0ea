using System.Collections.Concurrent;
using System.Security.Cryptography;

namespace Sidekick.Caching;

/// <summary>How a miss that found another sidecar filling the same entry ended its wait.</summary>
internal enum FillWaitOutcome
{
    /// <summary>The other fill reached the store and the entry was served from there.</summary>
    Stored,
    /// <summary>The other fill ended without an entry this request could use (not storable, given up, another variant).</summary>
    NotStored,
    /// <summary>At the other fill's rate it would not finish within SIDEKICK_CACHE_FILL_WAIT.</summary>
    TooSlow,
    /// <summary>SIDEKICK_CACHE_FILL_WAIT passed.</summary>
    TimedOut,
    /// <summary>The lease stopped being renewed (its sidecar stopped or lost the store).</summary>
    Dead,
    /// <summary>No wait: the lease said the other fill had just stored the entry, and it was served from there.</summary>
    JustStored,
}

/// <summary>
/// Coordinates the fills of one entry across the sidecars that share the bucket. Before a whole GET goes to the
/// origin to fill an entry, the filler writes a lease next to the entry and renews it with its progress until the
/// entry is in the store; a sidecar that misses the same entry meanwhile waits for that entry instead of fetching
/// the object from the origin again, as long as the filler's rate says it will finish within
/// SIDEKICK_CACHE_FILL_WAIT. A lease that is no longer renewed is dead and is ignored. Lease trouble never fails a
/// request: without a lease a sidecar simply fills on its own, as every sidecar did before.
/// </summary>
internal sealed class FillLeases
{
    private readonly CacheOptions _options;
    private readonly S3CacheStore _store;
    private readonly CacheMetrics _metrics;
    private readonly TimeProvider _time;
    // One per process: a lease names the sidecar holding it, so a sidecar never waits for itself.
    private readonly string _owner = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
    private bool? _conditionalWrites;
    // The one probe of the store's way with If-None-Match in flight: concurrent first claims share it (each running its
    // own probe on the same probe object could delete it under another and learn the wrong answer).
    private readonly Lock _learning = new();
    private Task<bool>? _probe;
    // Entries whose last whole GET here brought a response not to be stored (under the minimum size, no-store,
    // private, an error), by when: their misses skip the lease, whose store requests would buy nothing (a listing
    // or a small object through a caching sidecar would otherwise pay them on every GET). Bounded: cleared when full.
    private readonly ConcurrentDictionary<string, long> _notStorable = new();
    // Entries this sidecar stored or found in the store lately, by when: their lookups skip the lease read beside
    // them, which a hit never uses (one HEAD per hit, twice the store's requests for hot objects). A miss of such an
    // entry (evicted since) reads the lease in its claim instead, a round trip later. Bounded as the one above.
    private readonly ConcurrentDictionary<string, long> _stored = new();

    public FillLeases(CacheOptions options, S3CacheStore store, CacheMetrics metrics, TimeProvider time)
    {
        _options = options;
        _store = store;
        _metrics = metrics;
        _time = time;
    }

    /// <summary>How often a filler rewrites its lease with its progress.</summary>
    public static TimeSpan Renewal { get; } = TimeSpan.FromSeconds(1);

    /// <summary>How often a waiter reads the lease.</summary>
    public static TimeSpan Poll { get; } = TimeSpan.FromMilliseconds(250);

    /// <summary>A lease neither renewed nor written for this long is dead.</summary>
    public static TimeSpan Lifetime { get; } = TimeSpan.FromSeconds(5);

    public bool Enabled => _options.FillWait > TimeSpan.Zero;

    /// <summary>Whether the store refuses a conditional create of an object that exists; null until learned.</summary>
    public bool? HonoursConditionalWrites => _conditionalWrites;

    /// <summary>
    /// How long an entry is remembered as not storable (its misses skip the lease) or as stored (its lookups skip the
    /// lease read beside them).
    /// </summary>
    public static TimeSpan RememberedFor { get; } = TimeSpan.FromMinutes(1);

    /// <summary>The most entries each of the two memories holds; one is cleared when it is full.</summary>
    internal const int RememberedCapacity = 10_000;

    /// <summary>
    /// What a whole GET's fill of <paramref name="key"/> came to: a response not to be stored spares the misses of
    /// the next <see cref="RememberedFor"/> their lease; a stored one ends that at once, and spares the lookups of
    /// that time the lease read beside them.
    /// </summary>
    public void Answered(string key, bool storable)
    {
        if (storable)
        {
            _notStorable.TryRemove(key, out _);
            Remember(_stored, key);
            return;
        }

        _stored.TryRemove(key, out _);
        Remember(_notStorable, key);
    }

    /// <summary>A lookup found <paramref name="key"/> in the store: its next lookups skip the lease read for a while.</summary>
    public void Found(string key)
    {
        if (Enabled)
        {
            Remember(_stored, key);
        }
    }

    private void Remember(ConcurrentDictionary<string, long> memory, string key)
    {
        // Counting takes every lock of the dictionary: only a new key pays it (a hot entry's hits only renew theirs).
        if (!memory.ContainsKey(key) && memory.Count >= RememberedCapacity)
        {
            memory.Clear();
        }

        memory[key] = _time.GetTimestamp();
    }

    private bool KnownNotStorable(string key) => Recent(_notStorable, key);

    private bool Recent(ConcurrentDictionary<string, long> memory, string key)
    {
        if (!memory.TryGetValue(key, out var since))
        {
            return false;
        }

        if (_time.GetElapsedTime(since) < RememberedFor)
        {
            return true;
        }

        memory.TryRemove(new KeyValuePair<string, long>(key, since));
        return false;
    }

    /// <summary>The lease's name: beside the entry, never under it (file-system stores refuse an object under another).</summary>
    public static string KeyOf(string key) => key + ".fill";

    /// <summary>The object probed once to learn whether the store honours If-None-Match (one per sidecar: no two race on it).</summary>
    private string ConditionalProbeKey => $"sidekick-conditional-write-probe-{_owner}";

    /// <summary>
    /// The lease read a miss makes before it may take the lease, started now, beside the store lookup, so that a miss
    /// does not pay it after the lookup (one store round trip of its first byte). A hit drops it. Null where a miss
    /// would not read the lease first (leases off, the store's way with If-None-Match not yet learned, or an entry
    /// known not to be storable) or is unlikely (an entry stored or found here lately).
    /// </summary>
    public LeaseReadAhead? ReadAhead(string key, CancellationToken cancellationToken)
    {
        if (!Enabled || _conditionalWrites is null || KnownNotStorable(key) || Recent(_stored, key))
        {
            return null;
        }

        var read = ReadAsync(KeyOf(key), cancellationToken);
        // A hit never awaits it: its failure (a store error, the client gone) is observed here, and a miss that
        // awaits it sees the same exception and handles it as any other store error of its claim.
        _ = read.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        return new LeaseReadAhead(read);
    }

    /// <summary>
    /// Before this sidecar fills <paramref name="key"/>: takes the lease, or waits for the sidecar that holds it.
    /// Store errors before the origin request give up the lease (the fill goes on without one); one of the writes and
    /// reads beside it counts as not lost (<see cref="LostAsync"/>). Neither is the client's problem.
    /// <paramref name="readAhead"/> is the lease as <see cref="ReadAhead"/> read it beside the lookup.
    /// </summary>
    public async Task<FillClaim> ClaimAsync(string key, LeaseReadAhead? readAhead, CancellationToken cancellationToken)
    {
        if (!Enabled || KnownNotStorable(key))
        {
            return FillClaim.Alone;
        }

        var leaseKey = KeyOf(key);
        try
        {
            var mine = new FillLease(_owner, 0, -1, 0, 0);
            var conditional = await HonoursConditionalWritesAsync(cancellationToken);
            if (conditional && readAhead is null)
            {
                // No lease read went beside the lookup (the store's way was not known yet, or a fill of the entry was
                // running here then): the conditional create goes first, one round trip as a read would be, and the
                // lease is read only when the store refuses it.
                return await CreateOrReadAsync(leaseKey, mine, cancellationToken) is { } another &&
                       await DeferToHolderAsync(leaseKey, another, cancellationToken) is { } waiting
                    ? waiting
                    : FillClaim.Holding(leaseKey);
            }

            var held = readAhead is { } ahead ? await ahead.Read : await ReadAsync(leaseKey, cancellationToken);
            if (await DeferToHolderAsync(leaseKey, held, cancellationToken) is { } deferred)
            {
                return deferred;
            }

            // None, dead (its sidecar stopped renewing it), left over here, or just removed: this fill takes it. The
            // taking goes out beside the origin request (LeaseSettlement), off the miss's first byte: it decides only
            // when another sidecar took the lease within a round trip of this one, after both had found none. Where
            // If-None-Match is honoured that is one conditional create, which exactly one of them gets; where it is
            // ignored the store keeps the last write, which is read back, and the sidecar it names fills.
            return FillClaim.Holding(leaseKey, conditional
                ? CreateOrReadAsync(leaseKey, mine, cancellationToken)
                : WriteAndReadBackAsync(leaseKey, mine, cancellationToken));
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !cancellationToken.IsCancellationRequested)
        {
            _metrics.StoreError(ex);
            return FillClaim.Alone;
        }
    }

    /// <summary>
    /// The conditional create of a claim on a store that honours If-None-Match: null once this sidecar holds the lease,
    /// else the live lease of another sidecar that refused it. A lease the store still has that is no other sidecar's
    /// live one (dead, or this sidecar's own from an earlier fill) is taken over.
    /// </summary>
    /// <remarks>
    /// A lease write is never cut short by the client leaving (only by the store timeout): a write cancelled on this side
    /// may still be carried out by a store that had the whole request, after the removal that follows the client's
    /// leaving, and stay in the bucket for good (13 of 600 misses whose clients left within 5 ms, measured). Written to
    /// the end, it is removed after it.
    /// </remarks>
    private async Task<(FillLease Lease, DateTimeOffset Written)?> CreateOrReadAsync(string leaseKey, FillLease mine, CancellationToken cancellationToken)
    {
        if (await WithTimeout(c => _store.WriteLeaseAsync(leaseKey, mine, onlyIfAbsent: true, c), CancellationToken.None))
        {
            return null;
        }

        if (await ReadAsync(leaseKey, cancellationToken) is { } held && IsAnother(held))
        {
            return held;
        }

        await WithTimeout(c => _store.WriteLeaseAsync(leaseKey, mine, onlyIfAbsent: false, c), CancellationToken.None);
        return null;
    }

    /// <summary>
    /// The lease write of a claim on a store that ignores If-None-Match (not cut short by the client leaving, as in
    /// <see cref="CreateOrReadAsync"/>), then the lease as the store kept it.
    /// </summary>
    private async Task<(FillLease Lease, DateTimeOffset Written)?> WriteAndReadBackAsync(string leaseKey, FillLease mine, CancellationToken cancellationToken)
    {
        await WithTimeout(c => _store.WriteLeaseAsync(leaseKey, mine, onlyIfAbsent: false, c), CancellationToken.None);
        return await ReadAsync(leaseKey, cancellationToken);
    }

    /// <summary>
    /// Whether the claim's write and read beside the origin request (<see cref="FillClaim.ReadBack"/>) name another
    /// live sidecar: two took the lease at the same moment, and the other's write stayed (a store that ignores
    /// If-None-Match) or its create came first (a store that honours it). A store error, of the write or of the read,
    /// counts as not lost: the renewals write (and, where If-None-Match is ignored, look) again (<see cref="Hold"/>).
    /// </summary>
    public async Task<bool> LostAsync(Task<(FillLease Lease, DateTimeOffset Written)?> readBack)
    {
        try
        {
            return await readBack is { } held && IsAnother(held);
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            if (ex is not OperationCanceledException)
            {
                _metrics.StoreError(ex);
            }

            return false;
        }
    }

    /// <summary>
    /// After <see cref="LostAsync"/> said another sidecar's lease write stayed, before this request had the origin's
    /// answer: waits for that sidecar's fill as a miss that found its lease would have.
    /// </summary>
    public async Task<FillClaim> YieldAsync(string leaseKey, Task<(FillLease Lease, DateTimeOffset Written)?> readBack, CancellationToken cancellationToken)
    {
        try
        {
            return await DeferToHolderAsync(leaseKey, await readBack, cancellationToken) ?? FillClaim.Alone;
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !cancellationToken.IsCancellationRequested)
        {
            _metrics.StoreError(ex);
            return FillClaim.Alone;
        }
    }

    /// <summary>
    /// Learns how the store treats If-None-Match ahead of the first miss (the cache calls it once the store answers),
    /// so that the first miss after a start reads the lease beside its lookup and takes it beside its origin request,
    /// instead of paying the probe's three store round trips and the lease's read before its first byte. A store error
    /// leaves the question to the first claim.
    /// </summary>
    public async Task LearnAsync()
    {
        if (!Enabled)
        {
            return;
        }

        try
        {
            await HonoursConditionalWritesAsync(CancellationToken.None);
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            // The claim that asks next probes again and counts the error.
        }
    }

    /// <summary>
    /// Whether the store refuses a conditional create of an object that exists (AWS S3 and MinIO do; s3rver and some
    /// others ignore If-None-Match and overwrite). Asked once, with a probe object that is removed afterwards, by one
    /// probe however many claims ask at once; a store error leaves the question open for the next claim.
    /// </summary>
    private async Task<bool> HonoursConditionalWritesAsync(CancellationToken cancellationToken)
    {
        if (_conditionalWrites is { } known)
        {
            return known;
        }

        Task<bool> probe;
        lock (_learning)
        {
            if (_probe is null or { IsFaulted: true } or { IsCanceled: true })
            {
                _probe = Task.Run(ProbeConditionalWritesAsync, CancellationToken.None);
            }

            probe = _probe;
        }

        return await probe.WaitAsync(cancellationToken);
    }

    private async Task<bool> ProbeConditionalWritesAsync()
    {
        var probe = new FillLease(_owner, 0, -1, 0, 0);
        await WithTimeout(c => _store.WriteLeaseAsync(ConditionalProbeKey, probe, onlyIfAbsent: false, c), CancellationToken.None);
        var honoured = !await WithTimeout(c => _store.WriteLeaseAsync(ConditionalProbeKey, probe, onlyIfAbsent: true, c), CancellationToken.None);
        await WithTimeout(c => _store.DeleteAsync(ConditionalProbeKey, c), CancellationToken.None);
        _conditionalWrites = honoured;
        return honoured;
    }

    /// <summary>
    /// Keeps the lease taken by <see cref="ClaimAsync"/> while the fill whose head <paramref name="head"/> brings
    /// runs, renewed with its progress; once the entry is in the store the lease says so for a while and goes
    /// (<see cref="MarkStoredAsync"/>); a fill given up, or a response not to be stored, removes it at once.
    /// </summary>
    public void Hold(string leaseKey, Task<CacheFill?> head) => _ = HoldAsync(leaseKey, head);

    private async Task HoldAsync(string leaseKey, Task<CacheFill?> head)
    {
        var sequence = 0L;
        var ours = true;
        var bodyStarted = 0L; // the rate a waiter judges is the body's: the origin's time to answer is not in it
        CacheFill? fill = null;
        try
        {
            while (true)
            {
                var ending = fill is null ? head : (Task)fill.Upload;
                var renewal = Task.Delay(Renewal, _time);
                if (await Task.WhenAny(ending, renewal) == ending)
                {
                    if (fill is not null || await head is not { } known)
                    {
                        break; // the upload ended (stored or given up), or nothing is stored
                    }

                    fill = known; // renewed at once: waiters learn the length
                    bodyStarted = _time.GetTimestamp();
                }

                try
                {
                    if (_conditionalWrites == false && await ReadAsync(leaseKey, CancellationToken.None) is { } current && IsAnother(current))
                    {
                        // Two sidecars took the lease at the same moment on a store that ignores If-None-Match, and the
                        // other's write stayed: the entry is the other's to store, so that two uploads never replace each
                        // other under a reader (s3rver rewrites an object in place).
                        ours = false;
                        (fill ?? await head)?.LeaveUploadToAnother();
                        break;
                    }

                    var elapsed = fill is null ? 0 : (long)_time.GetElapsedTime(bodyStarted).TotalMilliseconds;
                    var progress = new FillLease(_owner, ++sequence, fill?.Length ?? -1, fill?.Written ?? 0, elapsed);
                    await WithTimeout(c => _store.WriteLeaseAsync(leaseKey, progress, onlyIfAbsent: false, c), CancellationToken.None);
                }
                catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
                {
                    // One renewal the store did not take in time (busy, slow, a 503): the next one tries again. Giving
                    // the lease up here took it away while the fill went on, and every sidecar waiting for that fill
                    // fetched the object from the origin itself, just when the store was busiest.
                    _metrics.StoreError(ex);
                }
            }
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            _metrics.StoreError(ex); // waiters see the lease die and fetch on their own
        }
        finally
        {
            try
            {
                if (ours && fill is { IsCommitted: true })
                {
                    await MarkStoredAsync(leaseKey, new FillLease(_owner, ++sequence, fill.Length, fill.Length, 0, Stored: true));
                }
                else if (ours)
                {
                    await WithTimeout(c => _store.DeleteAsync(leaseKey, c), CancellationToken.None);
                }
            }
            catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
            {
                _metrics.StoreError(ex); // it dies unrenewed after Lifetime
            }
        }
    }

    /// <summary>
    /// The entry is in the store: the lease says so for <see cref="Lifetime"/>, then goes. A miss on another sidecar
    /// whose lookup came just before the commit and whose lease read after it would otherwise find neither entry nor
    /// lease and fetch the object from the origin again (bench/cache.sh's staggered readers did, on a loaded store).
    /// Removed only while it is still this stored lease: a later fill of the entry may have taken it meanwhile.
    /// </summary>
    private async Task MarkStoredAsync(string leaseKey, FillLease stored)
    {
        await WithTimeout(c => _store.WriteLeaseAsync(leaseKey, stored, onlyIfAbsent: false, c), CancellationToken.None);
        await Task.Delay(Lifetime, _time);
        if (await ReadAsync(leaseKey, CancellationToken.None) is { } current && current.Lease == stored)
        {
            await WithTimeout(c => _store.DeleteAsync(leaseKey, c), CancellationToken.None);
        }
    }

    /// <summary>
    /// What the lease <paramref name="read"/> found says this miss should do: look in the store again when it says
    /// the entry was stored moments ago, wait for a live fill, or, when there is no live lease of another sidecar,
    /// null: fill.
    /// </summary>
    private async Task<FillClaim?> DeferToHolderAsync(string leaseKey, (FillLease Lease, DateTimeOffset Written)? read, CancellationToken cancellationToken)
    {
        if (read is not { } held || IsDead(held.Written))
        {
            return null;
        }

        if (held.Lease.Stored)
        {
            return FillClaim.JustStored;
        }

        return held.Lease.Owner != _owner ? await WaitAsync(leaseKey, held.Lease, cancellationToken) : null;
    }

    private async Task<FillClaim> WaitAsync(string leaseKey, FillLease first, CancellationToken cancellationToken)
    {
        var started = _time.GetTimestamp();
        var last = first;
        var lastChange = started;
        while (true)
        {
            var waited = _time.GetElapsedTime(started);
            if (last.Remaining is { } remaining && waited + remaining > _options.FillWait)
            {
                return Gave(FillWaitOutcome.TooSlow);
            }

            if (waited >= _options.FillWait)
            {
                return Gave(FillWaitOutcome.TimedOut);
            }

            await Task.Delay(Poll, _time, cancellationToken);
            var now = await ReadAsync(leaseKey, cancellationToken);
            if (now is not { } seen || seen.Lease.Owner == _owner || seen.Lease.Stored)
            {
                return FillClaim.OtherEnded; // stored, or removed: the entry may be in the store
            }

            // Progress, or a lease taken over: two sidecars that claimed at the same moment on a store that ignores
            // If-None-Match settled on the other one, or a dead lease was taken by a new fill. Either way this miss
            // waits for the fill the lease names now (within the same FILL_WAIT) rather than fetch the object twice.
            if (seen.Lease.Owner != last.Owner || seen.Lease.Sequence != last.Sequence)
            {
                last = seen.Lease;
                lastChange = _time.GetTimestamp();
            }
            else if (_time.GetElapsedTime(lastChange) > Lifetime)
            {
                // Judged on this sidecar's clock from the renewals it saw, not from the store's Last-Modified: that is
                // whole seconds (up to one earlier than the write), so a lease renewed on time under a busy store looked
                // dead a second early, and the waiting miss fetched the object from the origin again.
                return Gave(FillWaitOutcome.Dead);
            }
        }
    }

    private FillClaim Gave(FillWaitOutcome outcome)
    {
        _metrics.FillWait(outcome);
        return FillClaim.Alone;
    }

    private bool IsAnother((FillLease Lease, DateTimeOffset Written) held) => held.Lease.Owner != _owner && !IsDead(held.Written);

    // Written is on this sidecar's clock (see ReadAsync): the lease's age on one clock, whatever the store's says.
    private bool IsDead(DateTimeOffset written) => _time.GetUtcNow() - written > Lifetime;

    /// <summary>
    /// The lease at <paramref name="leaseKey"/>, with when it was written moved onto this sidecar's clock: now less its
    /// age by the store's clock (the answer's Date less its Last-Modified). The store's Last-Modified against this
    /// sidecar's now would mix two machines' clocks: one behind the store's saw a lease a killed sidecar left as written
    /// in the future and waited for it, one ahead by more than <see cref="Lifetime"/> took every live lease for dead.
    /// Only a store that sends no Date is judged by its Last-Modified against this clock.
    /// </summary>
    private async Task<(FillLease Lease, DateTimeOffset Written)?> ReadAsync(string leaseKey, CancellationToken cancellationToken) =>
        await WithTimeout(c => _store.ReadLeaseAsync(leaseKey, c), cancellationToken) is { } read
            ? (read.Lease, read.Age is { } age ? _time.GetUtcNow() - age : read.Written)
            : null;

    private async Task<T> WithTimeout<T>(Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.StoreTimeout);
        return await call(timeout.Token);
    }

    private async Task WithTimeout(Func<CancellationToken, Task> call, CancellationToken cancellationToken) =>
        await WithTimeout(async c => { await call(c); return true; }, cancellationToken);
}

/// <summary>A lease read started beside a request's store lookup (<see cref="FillLeases.ReadAhead"/>).</summary>
internal sealed record LeaseReadAhead(Task<(FillLease Lease, DateTimeOffset Written)?> Read);

/// <summary>
/// What <see cref="FillLeases.ClaimAsync"/> decided for a miss about to fill. <see cref="ReadBack"/>: on a store that
/// ignores If-None-Match, the lease write and its read-back; on one that honours it, the conditional create (and the
/// lease's read when refused); still running beside the origin request (<see cref="LeaseSettlement"/>).
/// </summary>
internal readonly record struct FillClaim(FillClaimKind Kind, string? LeaseKey = null, Task<(FillLease Lease, DateTimeOffset Written)?>? ReadBack = null)
{
    public static FillClaim Alone { get; } = new(FillClaimKind.Alone);

    public static FillClaim OtherEnded { get; } = new(FillClaimKind.OtherEnded);

    public static FillClaim JustStored { get; } = new(FillClaimKind.JustStored);

    public static FillClaim Holding(string leaseKey, Task<(FillLease Lease, DateTimeOffset Written)?>? readBack = null) => new(FillClaimKind.Holding, leaseKey, readBack);
}

internal enum FillClaimKind
{
    /// <summary>Fill without a lease (leases off, store trouble, or another fill that will not help in time).</summary>
    Alone,
    /// <summary>This sidecar holds the lease: fill and <see cref="FillLeases.Hold"/> it.</summary>
    Holding,
    /// <summary>Another sidecar's fill ended while this request waited: look in the store before filling.</summary>
    OtherEnded,
    /// <summary>The lease said another sidecar had just stored the entry (after this request's lookup): look again.</summary>
    JustStored,
}
