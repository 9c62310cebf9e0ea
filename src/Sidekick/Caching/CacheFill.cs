using Amazon.S3.Model;
using Microsoft.Win32.SafeHandles;

namespace Sidekick.Caching;

/// <summary>Why a fill was given up (the label of sidekick_cache_fills_abandoned_total).</summary>
internal enum FillAbandonReason
{
    /// <summary>The spool budget (SIDEKICK_CACHE_SPOOL_SIZE) had no room for the announced length.</summary>
    SpoolFull,

    /// <summary>The spool file could not be created or written (disk full, permissions).</summary>
    SpoolError,

    /// <summary>The store refused or failed an upload.</summary>
    StoreError,

    /// <summary>The origin's body ended short of, or past, its announced length, or failed.</summary>
    OriginIncomplete,

    /// <summary>The client left before the whole body came, so the rest was never read.</summary>
    ClientGone,

    /// <summary>Ranged responses were being combined into the object, and none came for a while before they covered it.</summary>
    RangesIncomplete,

    /// <summary>
    /// A response with another ETag or length came, or the entry was evicted (RFC 9111 §4.4) while the fill ran: the
    /// object changed, so what was kept of it is dropped.
    /// </summary>
    ObjectChanged,

    /// <summary>
    /// Its client read so slowly (a whole fill goes at its client's pace) that the fill gave its slot to a new one
    /// when every slot, or the spool, was taken: a few slow readers must not turn the cache off for everyone.
    /// </summary>
    ClientTooSlow,
}

/// <summary>
/// Writes one response into the bucket through a local spool file: the body is written to the spool as it
/// streams to the client, and an uploader reads it back in parts at the store's own pace (one PUT, or a
/// multipart upload for a body larger than a part) as soon as the bytes from the start through a part's end are
/// there. So the client is never slowed by the store, nor the fill abandoned for being faster than it; no part is
/// held in memory (each is read from the spool as the store takes it, <see cref="SpoolSlice"/>), so memory does
/// not grow with the fills in flight. The body comes from one whole response (<see cref="FillWriter"/> from 0),
/// or is combined from ranged responses of the same object, each written at its offset (RFC 9111 §3.4; a fill
/// <see cref="FromPieces"/> is given up when no piece has come for <see cref="PieceIdle"/> before they cover the
/// object). Requests for the same entry read the spool of a whole-response fill while it runs
/// (<see cref="OpenReader"/>). The entry becomes visible when the upload completes with exactly the announced
/// length; an abandoned fill aborts its multipart upload, deletes its spool and gives back its share of the
/// spool budget.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "The spool handle is released when the upload and the last reader are done, not by the creator.")]
internal sealed class CacheFill
{
    private readonly CacheFills _owner;
    private readonly S3CacheStore _store;
    private readonly IReadOnlyDictionary<string, string> _metadata;
    private readonly int _partSize;
    private readonly SafeFileHandle _spool;
    private readonly CancellationTokenSource _abandon = new();
    private readonly FillCoverage _coverage = new();
    // The bytes a fill combined from ranges reserved in the spool budget: every range it began to write.
    private readonly FillCoverage _reservedCoverage = new();
    private readonly TimeProvider _time;
    private readonly long _startedAt;
    private readonly ITimer? _idleCheck;
    private readonly Task<bool> _upload;
    private readonly DirectSpoolWriter? _direct;
    private TaskCompletionSource _moved = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _mayUpload = Task.CompletedTask;
    private long _written;
    private int _bodyComplete;
    private int _users = 1; // the upload; each reader adds one, and each write through the page cache while it runs
    private int _readers; // requests reading the spool now (OpenReader)
    private int _waitingReaders; // of those, the ones waiting for bytes the spool does not hold yet
    private int _ended;
    private int _leftToAnother;
    private int _committed;
    private long _lastWrite;

    public CacheFill(CacheFills owner, S3CacheStore store, string key, string target, CachedResponse entry, IReadOnlyDictionary<string, string> metadata,
        int partSize, SafeFileHandle spool, TimeProvider time, bool fromPieces)
    {
        _owner = owner;
        _store = store;
        Key = key;
        Target = target;
        Entry = entry;
        _metadata = metadata;
        _partSize = PartSizeFor(entry.Length, partSize);
        _spool = spool;
        _time = time;
        FromPieces = fromPieces;
        _lastWrite = time.GetTimestamp();
        _startedAt = _lastWrite;
        if (fromPieces)
        {
            _idleCheck = time.CreateTimer(static state => ((CacheFill)state!).CheckIdle(), this, PieceIdle, PieceIdle);
        }

        if (!fromPieces && owner.WritesDirect && DirectSpoolWriter.TryOpen(this, spool, time) is { } direct)
        {
            _direct = direct;
            _users++; // the writer's descriptor is closed and its last write done before the spool is let go
        }

        _upload = Task.Run(UploadAsync);
    }

    /// <summary>
    /// How long a fill combined from ranged responses waits for its next bytes: readers that fetch only some ranges
    /// (a Parquet footer and a few column chunks) never cover the object, and their fill must not hold a slot and
    /// spool budget for long.
    /// </summary>
    public static TimeSpan PieceIdle { get; } = TimeSpan.FromSeconds(30);

    /// <summary>Every byte of the body is in the spool (what is left is the upload).</summary>
    public bool BodyComplete => Volatile.Read(ref _bodyComplete) != 0;

    /// <summary>Time since bytes last came into the spool.</summary>
    public TimeSpan IdleFor => _time.GetElapsedTime(Volatile.Read(ref _lastWrite));

    /// <summary>The body is combined from ranged (206) responses of the object rather than copied from one whole response.</summary>
    public bool FromPieces { get; }

    /// <summary>How long ago the fill started.</summary>
    public TimeSpan Running => _time.GetElapsedTime(_startedAt);

    /// <summary>The entry's key in the bucket.</summary>
    public string Key { get; }

    /// <summary>The request target, for log lines.</summary>
    public string Target { get; }

    /// <summary>What is being stored: status, headers, length.</summary>
    public CachedResponse Entry { get; }

    public long Length => Entry.Length;

    /// <summary>Body bytes in the spool from the start without a gap (all of them, for a whole-response fill).</summary>
    public long Written => Volatile.Read(ref _written);

    /// <summary>
    /// The end of the bytes in the spool from <paramref name="position"/> on without a gap; <paramref name="position"/>
    /// when that byte is not there. Ranges combined into the object (§3.4) can be read before they meet.
    /// </summary>
    public long SpooledFrom(long position)
    {
        if (position < Written)
        {
            return Written; // the common case, without the lock: a whole body, or ranges that met
        }

        lock (_coverage)
        {
            return _coverage.RunEnd(position);
        }
    }

    public bool Abandoned => _abandon.IsCancellationRequested;

    /// <summary>The entry is in the store (set before the spool is let go, so a late reader can go there).</summary>
    public bool IsCommitted => Volatile.Read(ref _committed) != 0;

    /// <summary>Completes when the entry is in the store (true) or the fill was given up (false).</summary>
    public Task<bool> Upload => _upload;

    /// <summary>
    /// A writer for one response's body, which holds bytes [<paramref name="start"/>, <paramref name="end"/>) of the
    /// object: the whole body (from 0 to the length) or one range of it.
    /// </summary>
    public FillWriter Writer(long start, long end) => new(this, start, end, whole: start == 0 && end == Length && !FromPieces);

    /// <summary>
    /// Completes when the fill takes more bytes without holding more than its buffers (see
    /// <see cref="DirectSpoolWriter.WhenWritable"/>); at once when it writes through the page cache.
    /// </summary>
    public ValueTask WhenWritable() => _direct is { } direct ? direct.WhenWritable() : default;

    /// <summary>The direct spool writer's buffer at the body's next offset (<see cref="DirectSpoolWriter.Lend"/>); null without one.</summary>
    public System.Buffers.IMemoryOwner<byte>? Lend(long maxLength) => Abandoned ? null : _direct?.Lend(maxLength);

    /// <summary>
    /// The whole body's feeding changes hands (<see cref="FillWriter.HandOff"/>): the direct writer's current buffer is
    /// moved out of the reach of the client connection it was lent to.
    /// </summary>
    public void Unlend() => _direct?.Unlend();

    /// <summary>Requests reading the spool that wait for bytes it does not hold yet: they are as far as the fill.</summary>
    public int WaitingReaders => Volatile.Read(ref _waitingReaders);

    /// <summary>Called when a request reading the spool begins to wait and none was waiting (<see cref="FillHandOff"/>).</summary>
    internal Action? ReaderWaits;

    /// <summary>Writes body bytes at <paramref name="at"/> into the spool; false once the fill has been abandoned.</summary>
    public bool Write(long at, ReadOnlySpan<byte> data)
    {
        if (Abandoned)
        {
            _direct?.Close();
            return false;
        }

        if (_direct is { } direct)
        {
            return direct.Append(data); // a whole body: written in order from 0, published as it reaches the file
        }

        if (FromPieces && (Volatile.Read(ref _bodyComplete) != 0 || !Reserved(at, data.Length)))
        {
            // Complete: other ranges covered the object, and it may be stored and its spool let go already. A slower
            // client of the same range reads on from the origin; only its copy into the spool stops.
            return false;
        }

        // The write holds the spool file as a reader does: a whole fill's file is kept and handed to the next fill once
        // its last user lets go, and a write that passed the check above and then stalled (its thread descheduled
        // while the fill was given up) would otherwise land in that next fill's bytes, which its upload would store.
        if (!TryHold())
        {
            return false;
        }

        try
        {
            _owner.BeforeSpoolWriteForTests?.Invoke(this);
            RandomAccess.Write(_spool, data, at);
        }
        catch (ObjectDisposedException)
        {
            return false; // the same, when the other ranges completed it between the check above and this write
        }
        catch (IOException ex)
        {
            // A combination's file is sparse: its disk may fill under it, which is a full spool, not a failed one.
            var full = FromPieces && _owner.SpoolDiskFree is { } free && free < data.Length;
            Abandon(full ? FillAbandonReason.SpoolFull : FillAbandonReason.SpoolError, full ? $"the spool's file system is full ({ex.Message})" : ex.Message);
            return false;
        }
        finally
        {
            Release();
        }

        Published(at, data.Length);
        return true;
    }

    /// <summary>
    /// Reserves in the spool budget the blocks of [<paramref name="at"/>, +<paramref name="length"/>) no range reserved
    /// before (a fill combined from ranges holds only what its ranges cover, not the object's length); when the
    /// budget has no room for them the fill is given up (<see cref="FillAbandonReason.SpoolFull"/>) and this is false.
    /// Whole blocks, as the file system allocates them in the sparse file: counted in bytes, one-byte ranges 4 KiB
    /// apart reserved one byte each and took 4 KiB of disk each, and the budget no longer bounded the disk.
    /// </summary>
    private bool Reserved(long at, int length)
    {
        const long Block = SpoolBufferPool.Alignment;
        long more, covered;
        lock (_reservedCoverage)
        {
            var before = _reservedCoverage.Covered;
            _reservedCoverage.Add(at / Block * Block, (at + length + Block - 1) / Block * Block);
            covered = _reservedCoverage.Covered;
            more = covered - before;
        }

        if (more == 0 || _owner.GrowSpool(_spool, more))
        {
            return true;
        }

        Abandon(FillAbandonReason.SpoolFull,
            $"the ranges' {covered} bytes do not fit the spool budget ({_owner.SpoolUsed} of {_owner.SpoolCapacity} in use)");
        return false;
    }

    /// <summary>Bytes [<paramref name="at"/>, +<paramref name="length"/>) are in the spool file: readers and the uploader may read them.</summary>
    internal void Published(long at, int length)
    {
        lock (_coverage)
        {
            // Under the lock: two ranges landing at once must not publish their prefixes out of order.
            _coverage.Add(at, at + length);
            Volatile.Write(ref _written, _coverage.Prefix);
            if (FromPieces && _coverage.Prefix == Length)
            {
                Volatile.Write(ref _bodyComplete, 1); // the ranges cover the object
            }
        }

        Volatile.Write(ref _lastWrite, _time.GetTimestamp());
        Moved();
    }

    /// <summary>The direct writer wrote its last bytes and closed its descriptor.</summary>
    internal void DirectWriterDone() => Release();

    /// <summary>
    /// Ends the body: the upload finishes in the background when every announced byte came, else the fill is
    /// abandoned. Returns the upload's outcome; the caller need not wait for it.
    /// </summary>
    public Task<bool> Complete(bool clientGone)
    {
        if (_direct is { } direct)
        {
            direct.Finish(() => CompleteBody(clientGone));
        }
        else
        {
            CompleteBody(clientGone);
        }

        return _upload;
    }

    private void CompleteBody(bool clientGone)
    {
        if (!Abandoned)
        {
            if (Written == Length)
            {
                Volatile.Write(ref _bodyComplete, 1);
                Moved();
            }
            else
            {
                Abandon(clientGone ? FillAbandonReason.ClientGone : FillAbandonReason.OriginIncomplete,
                    $"{Written} of {Length} body bytes came");
            }
        }
    }

    /// <summary>Gives the fill up; false when it had ended already (stored, or given up by another caller).</summary>
    public bool Abandon(FillAbandonReason reason, string detail)
    {
        if (Interlocked.Exchange(ref _ended, 1) != 0)
        {
            return false;
        }

        _abandon.Cancel();
        _direct?.Close();
        _idleCheck?.Dispose();
        Moved();
        _owner.OnAbandoned(this, reason, detail);
        return true;
    }

    private void CheckIdle()
    {
        if (IdleFor < PieceIdle || BodyComplete)
        {
            return;
        }

        long covered;
        lock (_coverage)
        {
            covered = _coverage.Covered;
        }

        Abandon(FillAbandonReason.RangesIncomplete, $"the ranges read cover {covered} of {Length} bytes, and none came for {PieceIdle.TotalSeconds:0} s");
    }

    /// <summary>
    /// A stream of the body from <paramref name="from"/> through <paramref name="to"/> (inclusive), read from the
    /// spool as it fills; it fails with an IOException when the fill is abandoned before the bytes it still has to
    /// read came. Null when the fill already was abandoned.
    /// </summary>
    public Stream? OpenReader(long from, long to)
    {
        if (!TryHold())
        {
            return null;
        }

        Interlocked.Increment(ref _readers);
        return new SpoolReader(this, from, to + 1);
    }

    /// <summary>
    /// Whether the rest of this whole fill, from <paramref name="from"/>, is worth fetching without the client that
    /// started it: requests are reading its spool (cut where it stops, they would be left with a short body), and a
    /// strong ETag lets the origin be asked for that very version (If-Match) and nothing else.
    /// </summary>
    public bool MayContinueFrom(long from) =>
        !Abandoned && !FromPieces && from < Length && Volatile.Read(ref _readers) > 0 &&
        Entry.ETag is { } etag && !etag.StartsWith("W/", StringComparison.Ordinal);

    /// <summary>Takes one more hold on the spool file (released by <see cref="Release"/>); false once it was let go or the fill given up.</summary>
    private bool TryHold()
    {
        while (true)
        {
            var users = Volatile.Read(ref _users);
            if (users == 0 || Abandoned)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _users, users + 1, users) == users)
            {
                return true;
            }
        }
    }

    /// <summary>Waits until the spool holds byte <paramref name="position"/>, the body is complete, or the fill ends.</summary>
    private async ValueTask WaitBeyondAsync(long position, CancellationToken cancellationToken)
    {
        while (SpooledFrom(position) <= position && Volatile.Read(ref _bodyComplete) == 0 && !Abandoned)
        {
            var moved = Volatile.Read(ref _moved).Task;
            if (SpooledFrom(position) > position || Volatile.Read(ref _bodyComplete) != 0 || Abandoned)
            {
                return;
            }

            await moved.WaitAsync(cancellationToken);
        }
    }

    /// <summary>
    /// Waits until the bytes from the start through <paramref name="end"/> are in the spool without a gap (a part is
    /// read from there), the body is complete, or the fill ends. Not until byte <paramref name="end"/> - 1 alone is:
    /// a combination's later range may hold a part's last byte before the ranges ahead of it came (a Parquet reader
    /// reads the tail first; of parallel 8 MiB ranges the second holds the end of the second 5 MiB part), and the
    /// part, found short, gave the fill up as a store error.
    /// </summary>
    internal async ValueTask WaitForPrefixAsync(long end, CancellationToken cancellationToken)
    {
        while (Written < end && Volatile.Read(ref _bodyComplete) == 0 && !Abandoned)
        {
            await WaitBeyondAsync(Written, cancellationToken);
        }
    }

    private void Moved() => Interlocked.Exchange(ref _moved, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    private void Release()
    {
        if (Interlocked.Decrement(ref _users) == 0)
        {
            _owner.OnSpoolReleased(_spool);
        }
    }

    /// <summary>The most parts one multipart upload may have (S3's limit; MinIO's too).</summary>
    internal const int MaxParts = 10_000;

    /// <summary>
    /// The configured part size, or for a body that would need more than <see cref="MaxParts"/> of them (above 48.8
    /// GiB at 5 MiB) the smallest whole MiB that fits it in that many: S3 refuses part 10,001, which gave up the fill
    /// after all but its last parts had been sent.
    /// </summary>
    internal static int PartSizeFor(long length, int configured)
    {
        const long MiB = 1024 * 1024;
        var needed = (length + MaxParts - 1) / MaxParts;
        return needed <= configured ? configured : (int)Math.Min((needed + MiB - 1) / MiB * MiB, int.MaxValue);
    }

    private async Task<bool> UploadAsync()
    {
        var token = _abandon.Token;
        var partSize = _partSize;
        string? uploadId = null;
        try
        {
            if (Length <= partSize)
            {
                // The whole body fits one part: one PUT once it is all there.
                await WaitForCompleteAsync(token);
                await Volatile.Read(ref _mayUpload).WaitAsync(token);
                if (LeftToAnother)
                {
                    return Committed(stored: false);
                }

                if (!await StoredByAnotherAsync(token))
                {
                    await StoreWriteStall.RunAsync(_time, "the entry's PUT", async stall =>
                    {
                        await using var whole = new SpoolSlice(_spool, 0, Length) { Moved = stall.Progressed };
                        await _store.PutAsync(Key, whole, _metadata, stall.Token);
                    }, token);
                    ForgetUploaded(0, Length);
                }

                return Committed();
            }

            await WaitForBodyAsync(UploadDelay, token);
            await Volatile.Read(ref _mayUpload).WaitAsync(token);
            // A miss that did not wait for another sidecar's fill of this version finds it stored: nothing to upload.
            // Asked once the body is in (or UploadDelay passed), not while a fast body streams: the store request's
            // CPU would be taken from the copy loop on a busy machine.
            if (await StoredByAnotherAsync(token))
            {
                await WaitForCompleteAsync(token);
                return Committed();
            }

            var etags = new List<PartETag>();
            for (long offset = 0; offset < Length; offset += partSize)
            {
                var end = Math.Min(offset + partSize, Length);
                await WaitForPrefixAsync(end, token);
                token.ThrowIfCancellationRequested();
                if (Written < end)
                {
                    throw new OperationCanceledException("the body ended before this part");
                }

                if (LeftToAnother)
                {
                    return await LeaveUploadAsync(uploadId, token);
                }

                uploadId ??= await StoreWriteStall.RunAsync(_time, "the multipart upload's start", stall => _store.BeginMultipartAsync(Key, _metadata, stall.Token), token);
                var number = etags.Count + 1;
                etags.Add(await StoreWriteStall.RunAsync(_time, $"part {number}", async stall =>
                {
                    // Read from the spool as the store takes it: no part is held in memory.
                    await using var part = new SpoolSlice(_spool, offset, end - offset) { Moved = stall.Progressed };
                    return await _store.UploadPartAsync(Key, uploadId, number, part, stall.Token);
                }, token));
                ForgetUploaded(offset, end);
            }

            await WaitForCompleteAsync(token);
            if (LeftToAnother)
            {
                return await LeaveUploadAsync(uploadId, token);
            }

            if (await StoredByAnotherAsync(token))
            {
                await AbortQuietlyAsync(uploadId!); // the entry is there: this fill did its job
            }
            else
            {
                // Not cut at the 60 s without progress of the other writes: a completion sends only the short list of parts,
                // so nothing shows progress, and S3 documents that it may take minutes for a large object (it answers 200
                // at once and sends whitespace while it joins the parts), as Ceph and a busy MinIO may too. Cut at 60 s, a
                // multi-GiB fill would be given up as store_error just before it was stored, and its abort then refused
                // (NoSuchUpload) as a second error. Bounded all the same: the SDK's timeout ends at those early headers.
                await StoreWriteStall.RunAsync(_time, "the multipart upload's completion",
                    stall => _store.CompleteMultipartAsync(Key, uploadId!, etags, stall.Token), token, StoreWriteStall.CompletionTimeout);
            }

            return Committed();
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex) || ex is IOException)
        {
            if (!Abandoned)
            {
                var spoolFailed = SpoolSlice.FailedIn(ex);
                if (ex is not OperationCanceledException && !spoolFailed)
                {
                    _owner.Metrics.StoreError(ex);
                }

                var why = spoolFailed ? ex.Message : CacheStoreFailure.Describe(ex, _store.AccessKey);
                if (spoolFailed || FromPieces)
                {
                    Abandon(spoolFailed ? FillAbandonReason.SpoolError : FillAbandonReason.StoreError, why);
                }
                else
                {
                    await OutliveStoreFailureAsync(uploadId, why);
                    return false;
                }
            }

            if (uploadId is not null)
            {
                await AbortQuietlyAsync(uploadId);
            }

            return false;
        }
        finally
        {
            Release();
        }
    }

    /// <summary>
    /// The store failed a whole fill's upload while its body may still be arriving: the entry will not be stored, but
    /// the requests reading this fill's spool (joined after the MISS) are served on to the body's end, as its first
    /// client is from the origin. Given up at once, their responses were cut where the spool stopped. The upload is
    /// aborted now; the fill is given up as a store error once the body has ended (or the fill ended otherwise), and
    /// until then it holds its slot and spool as it did while uploading.
    /// </summary>
    private async Task OutliveStoreFailureAsync(string? uploadId, string why)
    {
        if (uploadId is not null)
        {
            await AbortQuietlyAsync(uploadId);
        }

        await WaitBeyondAsync(Length, CancellationToken.None);
        Abandon(FillAbandonReason.StoreError, why);
    }

    /// <summary>
    /// A part the store has: the pages its upload read of a directly written spool may go (see
    /// <see cref="DirectSpoolWriter.ForgetReadPages"/>). A fill combined from ranges was written through the page
    /// cache, and its kept file's pages spare the next ranged fill new ones: those stay. After the last part, to the
    /// end of the file: the kernel's read-ahead of that part went on into what lies past the body in a reused file.
    /// </summary>
    private void ForgetUploaded(long offset, long end)
    {
        if (_direct is not null)
        {
            DirectSpoolWriter.ForgetReadPages(_spool, offset, end >= Length ? 0 : end - offset);
        }
    }

    /// <summary>
    /// Holds the store writes until <paramref name="gate"/> completes: the read-back of this fill's lease, which may
    /// name another sidecar (<see cref="LeaveUploadToAnother"/>). Set when the origin's head comes, before any body byte.
    /// </summary>
    public void UploadAfter(Task? gate)
    {
        if (gate is not null)
        {
            Volatile.Write(ref _mayUpload, gate);
        }
    }

    /// <summary>
    /// Another sidecar fills the same entry and holds its lease (<see cref="FillLeases"/>): this fill stores nothing
    /// more, so that the two uploads never replace each other under a reader. Its spool still serves the requests
    /// reading it until the body is complete.
    /// </summary>
    public void LeaveUploadToAnother() => Volatile.Write(ref _leftToAnother, 1);

    internal bool LeftToAnother => Volatile.Read(ref _leftToAnother) != 0;

    private async Task<bool> LeaveUploadAsync(string? uploadId, CancellationToken token)
    {
        if (uploadId is not null)
        {
            await AbortQuietlyAsync(uploadId);
        }

        await WaitForCompleteAsync(token);
        return Committed(stored: false);
    }

    /// <summary>Aborts a multipart upload; a store that cannot (s3rver has no abort) expires it by its own lifecycle rules.</summary>
    private async Task AbortQuietlyAsync(string uploadId)
    {
        try
        {
            // Watched as the upload's writes are: a stalled store would otherwise keep the fill's spool for minutes more.
            await StoreWriteStall.RunAsync(_time, "the multipart upload's abort",
                stall => _store.AbortMultipartAsync(Key, uploadId, stall.Token), CancellationToken.None);
        }
        catch (Exception abortError) when (S3CacheStore.IsStoreError(abortError))
        {
            _owner.Metrics.StoreError(abortError);
        }
    }

    /// <summary>
    /// Whether the same version (same origin ETag and length) is in the store already, filled meanwhile by another
    /// sidecar that missed at the same time: then this fill does not replace it, since on some stores a reader of
    /// the object being replaced gets a body that ends short (measured with s3rver, bench/cache-results.md).
    /// Without an ETag nothing proves two bodies equal, and the upload goes ahead.
    /// </summary>
    private async Task<bool> StoredByAnotherAsync(CancellationToken token)
    {
        if (Entry.ETag is null)
        {
            return false;
        }

        var found = await _store.HeadAsync(Key, token);
        return found is { Entry: { } stored } && stored.ETag == Entry.ETag && stored.Length == Entry.Length;
    }

    /// <param name="stored">False when the entry is another sidecar's to store (<see cref="LeaveUploadToAnother"/>).</param>
    private bool Committed(bool stored = true)
    {
        if (Interlocked.Exchange(ref _ended, 1) != 0)
        {
            return false;
        }

        Volatile.Write(ref _committed, 1);
        _idleCheck?.Dispose();
        _owner.OnCommitted(this, stored);
        return true;
    }

    /// <summary>
    /// How long the upload of a body that is still arriving waits before it begins. The upload (and a store on the
    /// same host) takes CPU from the client being served: on two cores a 256 MiB MISS took 2.2-3.1x the uncached
    /// proxy's time with its upload alongside, 1.0-1.5x with the upload after it (bench/cache-results.md). A body
    /// that arrives within this time is uploaded after it; a longer one is uploaded as it arrives, so that its
    /// entry never waits for a slow client by more than this.
    /// </summary>
    public static TimeSpan UploadDelay { get; } = TimeSpan.FromSeconds(2);

    /// <summary>Waits until the body is complete or <paramref name="atMost"/> passed (the fill given up ends it too).</summary>
    private async ValueTask WaitForBodyAsync(TimeSpan atMost, CancellationToken token)
    {
        using var timer = new CancellationTokenSource(atMost, _time);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(token, timer.Token);
        try
        {
            await WaitBeyondAsync(Length, either.Token);
        }
        catch (OperationCanceledException) when (!token.IsCancellationRequested)
        {
            // Still arriving after atMost: the upload goes along with it.
        }
    }

    private async ValueTask WaitForCompleteAsync(CancellationToken token)
    {
        await WaitBeyondAsync(Length, token);
        token.ThrowIfCancellationRequested();
        if (Volatile.Read(ref _bodyComplete) == 0)
        {
            throw new OperationCanceledException("the body did not complete");
        }
    }

    /// <summary>Reads a range of the body from the spool, waiting for bytes not written yet.</summary>
    private sealed class SpoolReader(CacheFill fill, long position, long end) : Stream
    {
        private int _disposed;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (position >= end || buffer.IsEmpty)
            {
                return 0;
            }

            if (fill.SpooledFrom(position) <= position)
            {
                if (Interlocked.Increment(ref fill._waitingReaders) == 1)
                {
                    Volatile.Read(ref fill.ReaderWaits)?.Invoke();
                }

                try
                {
                    await fill.WaitBeyondAsync(position, cancellationToken);
                }
                finally
                {
                    Interlocked.Decrement(ref fill._waitingReaders);
                }
            }

            var spooled = fill.SpooledFrom(position);
            if (spooled <= position)
            {
                // Given up before these bytes came. What the spool does hold is read on after an abandonment (a store
                // that failed the upload, the filling client gone): this reader keeps the file open, and those bytes
                // are the object's, so its client is not cut short for the store's sake.
                throw new IOException("the fill this response was read from was abandoned");
            }

            var available = (int)Math.Min(Math.Min(spooled, end) - position, buffer.Length);
            var read = await RandomAccess.ReadAsync(fill._spool, buffer[..available], position, cancellationToken);
            position += read;
            return read;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count).GetAwaiter().GetResult();
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                Interlocked.Decrement(ref fill._readers);
                fill.Release();
            }

            base.Dispose(disposing);
        }
    }
}
