using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;
using Sidekick.Forwarding;

namespace Sidekick.Caching;

/// <summary>
/// Answers a request from a stored entry: a 304 for the client's own matching conditional (RFC 9110 §13.2.2),
/// a 206 for a single satisfiable range, a 416 for an unsatisfiable one, else the whole stored response, with
/// the stored header values as they were received and a correct Age. Nothing here decides whether the entry
/// may be used: <see cref="CachePolicy"/> did.
/// </summary>
internal sealed class StoredResponseWriter(CacheOptions options, S3CacheStore store, CacheEntries entries, CacheHealth health, CacheMetrics metrics, TimeProvider time)
{
    /// <summary>
    /// Serves a stored response, its body from the store, or from <paramref name="fill"/>'s spool while that fill
    /// is still running, and counts it by <paramref name="outcome"/> (X-Cache: HIT or REVALIDATED). False, with
    /// nothing sent or counted, when the body could not be opened or the request's If-Match or If-Unmodified-Since
    /// does not hold for the entry: the origin answers those. A body that breaks midway and cannot be finished from
    /// the cache is finished from <paramref name="origin"/> when it can (<see cref="OriginRemainder"/>).
    /// </summary>
    public async Task<bool> ServeAsync(HttpContext context, ICacheOrigin origin, CacheLookup hit, string outcome, CacheFill? fill = null)
    {
        var entry = hit.Entry;
        var request = context.Request;
        var response = context.Response;
        var age = (long)CachePolicy.CurrentAge(entry, time.GetUtcNow()).TotalSeconds;

        // The client's conditionals and Range apply to a successful response only (RFC 9110 §13.2.1, §14.2):
        // a stored 404 or 301 is served as it is. If-Match and If-Unmodified-Since are the origin's to evaluate, not
        // a cache's (RFC 9111 §4.3.2): when the entry does not satisfy them, the origin answers (its 412, or the newer
        // version the client pinned); when it does, the entry holds the very bytes the client asked for. Either way
        // an SDK pinning one version across its ranged reads never gets bytes of another.
        if (entry.Status is >= 200 and < 300 && PreconditionFails(request, entry))
        {
            return false;
        }

        if (entry.Status is >= 200 and < 300 && NotModified(request, entry))
        {
            // What a 200 would have carried of these (RFC 9110 §15.4.5), every field line of each.
            response.StatusCode = StatusCodes.Status304NotModified;
            foreach (var (name, value) in entry.Headers)
            {
                if (NotModifiedFields.Contains(name))
                {
                    Forwarding.Latin1Fields.AllowFor(name, value);
                    AppendLine(response.Headers, name, value);
                }
            }

            response.Headers.Age = age.ToString(CultureInfo.InvariantCulture);
            StoredDate(response, entry);
            response.Headers[ResponseCache.CacheHeader] = outcome;
            return Answered(outcome);
        }

        var (from, to, partial, unsatisfiable) = RangeOf(request, entry);
        if (unsatisfiable)
        {
            response.StatusCode = StatusCodes.Status416RangeNotSatisfiable;
            response.Headers.ContentRange = $"bytes */{entry.Length}";
            response.Headers[ResponseCache.CacheHeader] = outcome;
            return Answered(outcome);
        }

        // The bytes of the stored body this answer sends: its range, or all of it.
        var (first, last) = partial ? (from, to) : (0L, entry.Length - 1);
        StoredObject? stored = null;
        Stream? spooled = null;
        if (fill is not null && !HttpMethods.IsHead(request.Method) && entry.Length > 0)
        {
            spooled = fill.OpenReader(first, last);
            if (spooled is null)
            {
                return false; // given up meanwhile
            }
        }
        else if (!HttpMethods.IsHead(request.Method) && entry.Length > 0)
        {
            if (hit.Opened is { } opened && opened.From == first && opened.To == last && opened.Claim())
            {
                stored = opened; // the lookup's own GET opened these very bytes, not read from yet
            }
            else
            {
                try
                {
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
                    timeout.CancelAfter(options.StoreTimeout);
                    stored = await store.OpenAsync(hit.Key, first, last, timeout.Token);
                }
                catch (Exception ex) when (PastTheEnd(ex) && !context.RequestAborted.IsCancellationRequested)
                {
                    // 416: the object ends before bytes the entry says it has. A fact about this entry, not the store's
                    // health: the entry goes, and the origin answers this request (nothing was sent yet).
                    await entries.EvictFaultyAsync(hit.Key, $"the store has no byte {first} of it (416), its metadata says {entry.Length} bytes");
                    return false;
                }
                catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !context.RequestAborted.IsCancellationRequested)
                {
                    // The second half of a lookup made with a HEAD: a busy store's answer is judged as the lookup's would be.
                    health.LookupFailed(ex, options.StoreTimeout);
                    return false;
                }
            }

            // Null: gone since the lookup (evicted, or replaced by a newer fill just now), not a store failure. The
            // caller asks the origin; the store stays in use for every other request.
            if (stored is null)
            {
                return false;
            }

            if (ShortOf(stored, entry) is { } wrong)
            {
                // The entry's own metadata over another number of bytes (found by a HEAD lookup, or written since).
                stored.Dispose();
                await entries.EvictFaultyAsync(hit.Key, wrong);
                return false;
            }

            // Without the store's ETag (the entry came from a fill here, which may have left the upload to another
            // sidecar's version), only a strong origin ETag ties the bytes to the entry: equal lengths do not.
            if (!S3CacheStore.Holds(stored, entry) ||
                (hit.StoreETag is { } seen ? !SameBytes(seen, stored, entry) : entry.ETag is not { } strong || strong.StartsWith("W/", StringComparison.Ordinal)))
            {
                // Replaced since the lookup: these bytes are not the entry's; the backend answers instead.
                stored.Dispose();
                return false;
            }
        }

        try
        {
            response.StatusCode = partial ? StatusCodes.Status206PartialContent : entry.Status;
            // Ours first, then the origin's, as on a proxied response.
            response.Headers.Server = "SideKick";
            foreach (var (name, value) in entry.Headers)
            {
                if (!string.Equals(name, HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase) && !(partial && WholeObjectOnly(name)))
                {
                    Forwarding.Latin1Fields.AllowFor(name, value);
                    AppendLine(response.Headers, name, value);
                }
            }

            response.Headers.Age = age.ToString(CultureInfo.InvariantCulture);
            StoredDate(response, entry);
            response.Headers[ResponseCache.CacheHeader] = outcome;
            if (entry.Status == StatusCodes.Status200OK && entry.Header(HeaderNames.AcceptRanges) is null)
            {
                // The cache answers ranges of a stored 200 itself; an origin's own Accept-Ranges (even "none") stays.
                response.Headers.AcceptRanges = "bytes";
            }

            if (!entry.HasNoContent)
            {
                // A 204 carries no Content-Length (RFC 9110 §8.6); every other stored status its own length.
                response.ContentLength = partial ? to - from + 1 : entry.Length;
            }
            if (partial)
            {
                response.Headers.ContentRange = $"bytes {from}-{to}/{entry.Length}";
            }

            Answered(outcome);
            if (stored is null && spooled is null)
            {
                return true;
            }

            if (spooled is not null)
            {
                await CopyFromSpoolAsync(context, origin, spooled, fill!, entry, first, last);
            }
            else
            {
                stored = await CopyFromStoreAsync(context, origin, hit, stored!, first, last);
            }
        }
        finally
        {
            stored?.Dispose();
            if (spooled is not null)
            {
                await spooled.DisposeAsync();
            }
        }

        return true;
    }

    /// <summary>
    /// Counts the answer (a hit, or a stored entry the backend confirmed) once it is decided, before its body: a client
    /// holding the whole response, or an operator watching a long one, finds it counted. True, for the caller's return.
    /// </summary>
    private bool Answered(string outcome)
    {
        if (outcome == "REVALIDATED")
        {
            metrics.Revalidation();
        }
        else
        {
            metrics.Hit();
        }

        return true;
    }

    /// <summary>
    /// A fill's spool. A read that fails (the fill was given up before the bytes it still owes came) or that gets no
    /// byte for <see cref="FillReadIdleTimeout"/> (a fill runs at its first client's pace, and a first client that
    /// stopped reading would otherwise hold every request reading the fill for as long as it likes) is finished from
    /// the origin when it can be, else the client's response is cut.
    /// </summary>
    private async Task CopyFromSpoolAsync(HttpContext context, ICacheOrigin origin, Stream spooled, CacheFill fill, CachedResponse entry, long first, long last)
    {
        var (sent, failure) = await CopyAsync(spooled, context, long.MaxValue, metrics, idleClock: time, idleTimeout: FillReadIdleTimeout);
        if (failure is null)
        {
            return;
        }

        var why = failure is TimeoutException ? $"its fill, running here, sent no byte for {Cli.GoDuration.Format(FillReadIdleTimeout)}" : failure.Message;
        await spooled.DisposeAsync(); // the fill's spool is not held while the origin sends the rest
        await FinishFromOriginAsync(context, origin, entry, fill.Key, first + sent, last, why, metrics.FillReadBroken);
    }

    /// <summary>
    /// The cache cannot send bytes <paramref name="from"/> through <paramref name="to"/> of a body under way: the
    /// origin sends them (<see cref="OriginRemainder"/>), or the client's response is cut (its headers are out: never a
    /// truncated body). Counted by <paramref name="count"/> and told to <see cref="ReadBroken"/> either way.
    /// </summary>
    private async Task FinishFromOriginAsync(
        HttpContext context, ICacheOrigin origin, CachedResponse entry, string key, long from, long to, string why, Action<BrokenRead> count)
    {
        var (finished, refusal) = await OriginRemainder.TrySendAsync(context, origin, entry, from, to);
        var outcome = finished ? BrokenRead.FromOrigin : BrokenRead.Cut;
        count(outcome);
        ReadBroken?.Invoke(key, from, outcome, finished ? why : $"{why}; {refusal}");
        if (!finished)
        {
            context.Abort();
        }
    }

    /// <summary>
    /// How long a request reading a fill in progress waits for its next byte; a fill idle that long is not joined either.
    /// Under the 50-60 s after which S3 clients give up a read, so that their retry is answered by the origin.
    /// </summary>
    internal static TimeSpan FillReadIdleTimeout { get; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Sends bytes <paramref name="from"/> through <paramref name="to"/> of the stored body. A read that breaks
    /// midway (a store connection reset, or an object rewritten in place under its readers, as s3rver does when
    /// two sidecars store the same version) is resumed from the first byte not sent, as long as the store still
    /// holds the same bytes: the same object (store ETag) or the same version of the response (a strong origin
    /// ETag and length). When it cannot resume, the origin is asked for the rest (<see cref="OriginRemainder"/>), and
    /// only when that fails too is the client's response cut: its headers are out, and a short body must never pass
    /// for a whole one. Returns the stored object last opened, for the caller to dispose.
    /// </summary>
    private async Task<StoredObject> CopyFromStoreAsync(HttpContext context, ICacheOrigin origin, CacheLookup hit, StoredObject stored, long from, long to)
    {
        var sent = 0L;
        var expected = to - from + 1;
        var breaksWithoutProgress = 0;
        while (true)
        {
            var (copied, failure) = await CopyAsync(stored.Body, context, expected - sent, metrics, idleClock: time);
            sent += copied;
            if (sent == expected)
            {
                return stored;
            }

            failure ??= new IOException($"the stored body ended after {from + sent} of {to + 1} bytes");
            metrics.StoreError(failure); // counted, but one broken body does not take the store offline
            breaksWithoutProgress = copied > 0 ? 0 : breaksWithoutProgress;
            StoredObject? again = null;
            var sameBytes = true;
            string? wrong = null;
            while (again is null && sameBytes && wrong is null && ++breaksWithoutProgress <= MaxResumesWithoutProgress)
            {
                (again, sameBytes, wrong) = await ReopenAsync(context, hit, stored, from + sent, to, breaksWithoutProgress);
            }

            var why = wrong is null ? failure.Message : $"{failure.Message}; {wrong}";
            if (again is null)
            {
                await FinishFromOriginAsync(context, origin, hit.Entry, hit.Key, from + sent, to, why, metrics.StoredReadBroken);
                if (wrong is not null)
                {
                    // This client was finished from the origin or cut (its headers are out); the next one must not break
                    // at the same byte: the entry goes, and the next request fills it again.
                    await entries.EvictFaultyAsync(hit.Key, wrong);
                }

                return stored;
            }

            metrics.StoredReadBroken(BrokenRead.Resumed);
            ReadBroken?.Invoke(hit.Key, from + sent, BrokenRead.Resumed, why);
            stored.Dispose();
            stored = again;
        }
    }

    /// <summary>Attempts to reopen a broken read without a byte sent since, before the origin is asked for the rest.</summary>
    internal const int MaxResumesWithoutProgress = 3;

    /// <summary>A body's read from the store or a fill broke: the entry's key, the offset it broke at, how it went on, and why.</summary>
    public event Action<string, long, BrokenRead, string>? ReadBroken;

    /// <summary>
    /// The rest of a stored body whose read broke, when the store holds the same bytes; null with
    /// <c>SameBytes</c> false when it holds others now (no use asking again), null with <c>Short</c> saying how when the
    /// object under the entry's metadata is shorter or longer than the entry (no use asking again either), null alone
    /// after a store error.
    /// </summary>
    private async Task<(StoredObject? Again, bool SameBytes, string? Short)> ReopenAsync(HttpContext context, CacheLookup hit, StoredObject broken, long from, long to, int attempt)
    {
        try
        {
            // A rewrite in progress is over in moments: wait a little longer before each attempt.
            await Task.Delay(TimeSpan.FromMilliseconds(50 << attempt), time, context.RequestAborted);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
            timeout.CancelAfter(options.StoreTimeout);
            var again = await store.OpenAsync(hit.Key, from, to, timeout.Token);
            if (again is null)
            {
                return (null, true, null); // gone, or not readable yet (an object being rewritten): asked again
            }

            if (SameBytes(broken.ETag, again, hit.Entry))
            {
                if (ShortOf(again, hit.Entry) is { } wrong)
                {
                    again.Dispose();
                    return (null, true, wrong);
                }

                return (again, true, null);
            }

            again.Dispose();
            return (null, false, null);
        }
        catch (Exception ex) when (PastTheEnd(ex) && !context.RequestAborted.IsCancellationRequested)
        {
            return (null, true, $"the store has no byte {from} of it (416), its metadata says {hit.Entry.Length} bytes");
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !context.RequestAborted.IsCancellationRequested)
        {
            metrics.StoreError(ex); // gone or not readable yet (an object being rewritten): asked again
            return (null, true, null);
        }
    }

    /// <summary>
    /// How an opened object that carries <paramref name="entry"/>'s own metadata does not hold its body: the store's
    /// whole length of it is another than the entry's. Null when it holds as many bytes (or the store did not say, or
    /// the metadata is another version's: a replacement, not a fault of this entry).
    /// </summary>
    private static string? ShortOf(StoredObject opened, CachedResponse entry) =>
        S3CacheStore.Holds(opened, entry) ? opened.Head.SizeMismatch(entry.Length) : null;

    /// <summary>The store's 416 for a read of an entry's bytes: the object ends before them.</summary>
    private static bool PastTheEnd(Exception ex) =>
        ex is Amazon.S3.AmazonS3Exception { StatusCode: HttpStatusCode.RequestedRangeNotSatisfiable };

    /// <summary>
    /// Whether an opened object holds the bytes an earlier look at the store saw (the lookup, or the read that broke),
    /// as <paramref name="storeETag"/> named them: the same store object, or the same version of the origin's response,
    /// which only a strong validator and the length prove (RFC 9110 §8.8.1). Without a strong one (no ETag, or a weak
    /// one) another version of the same length stored in between would pass for it, its body sent under the headers
    /// that were looked up: only the store's own ETag tells them apart then.
    /// </summary>
    private static bool SameBytes(string? storeETag, StoredObject opened, CachedResponse entry) =>
        (storeETag is { Length: > 0 } && opened.ETag == storeETag) ||
        (entry.ETag is { } etag && !etag.StartsWith("W/", StringComparison.Ordinal) && S3CacheStore.Holds(opened, entry));

    /// <summary>
    /// Copies at most <paramref name="limit"/> bytes to the client; returns how many it sent, and the store or spool
    /// error that stopped it early. Each read lands in the buffers the server sends from (as the forwarder copies an
    /// origin's body), so every byte is copied once less than through the response stream; the exchange meter, when
    /// the request has one (a response revalidated with the origin), counts them as if written through its stream.
    /// Only the reads' errors are the store's: a client that went away (a failed write or flush, even before the
    /// request is marked aborted) ends the request and is never counted against the store. With
    /// <paramref name="idleClock"/> (a body from the store), a read that gets no byte for <see cref="StoredReadIdleTimeout"/>
    /// fails as a timeout, so that a store stalled mid-body is asked again instead of holding the client until its
    /// own read timeout; only the wait for the store counts, never a slow client's.
    /// </summary>
    private static async Task<(long Sent, Exception? Failure)> CopyAsync(
        Stream body, HttpContext context, long limit, CacheMetrics metrics, TimeProvider? idleClock = null, TimeSpan? idleTimeout = null)
    {
        var idleLimit = idleTimeout ?? StoredReadIdleTimeout;
        var metered = context.Features.Get<IHttpResponseBodyFeature>() as IMeteredResponseBody;
        var writer = metered?.ServerWriter ?? context.Response.BodyWriter;
        var served = context.Features.Get<ServedBodyCount>();
        var aborted = context.RequestAborted;
        using var idle = idleClock is null ? null : new CancellationTokenSource(Timeout.InfiniteTimeSpan, idleClock);
        using var reads = idle is null ? null : CancellationTokenSource.CreateLinkedTokenSource(aborted, idle.Token);
        var readToken = reads?.Token ?? aborted;
        await context.Response.StartAsync(aborted); // the head goes out with the first body bytes
        var sent = 0L;
        while (sent < limit)
        {
            var memory = writer.GetMemory(ReadSize);
            if (memory.Length > limit - sent)
            {
                memory = memory[..(int)(limit - sent)];
            }

            int read;
            try
            {
                idle?.CancelAfter(idleLimit);
                read = await body.ReadAsync(memory, readToken);
                idle?.CancelAfter(Timeout.InfiniteTimeSpan);
            }
            catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !aborted.IsCancellationRequested)
            {
                return (sent, idle is { IsCancellationRequested: true }
                    ? new TimeoutException($"the store sent no byte of the body for {Cli.GoDuration.Format(idleLimit)}", ex)
                    : ex);
            }

            if (read == 0)
            {
                break;
            }

            metered?.Wrote(memory.Span[..read]);
            writer.Advance(read);
            sent += read;
            served?.Add(read);
            metrics.Served(read);
            var flushed = await writer.FlushAsync(aborted);
            if (flushed.IsCompleted || flushed.IsCanceled)
            {
                throw new OperationCanceledException("the client connection closed during the response body");
            }
        }

        return (sent, null);
    }

    /// <summary>
    /// How long a read of a stored body may wait for its next byte before it counts as broken and is resumed: S3 clients
    /// give up on a read after 60 s (awscli, boto3, the Java SDK's socket timeout after 50 s), so a stalled store gets
    /// asked again well before that.
    /// </summary>
    internal static TimeSpan StoredReadIdleTimeout { get; } = TimeSpan.FromSeconds(15);

    /// <summary>What one read of a stored body asks for: as the forwarder's reads of an origin's.</summary>
    private const int ReadSize = 64 * 1024;

    /// <summary>
    /// The Date the origin generated the response at, not the time it is served (RFC 9110 §6.6.1: the origin's
    /// Date stays with the message; RFC 9111 §4.2.3: Age tells how long it has been stored since).
    /// </summary>
    private static void StoredDate(HttpResponse response, CachedResponse entry)
    {
        // An origin that sent no Date: the time the response was received stands for it (RFC 9110 §6.6.1), not the
        // time of this answer, which with Age would put the response's origination in the future.
        response.Headers.Date = (entry.Date ?? entry.ReceivedAt).ToString("r", CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// One stored field line added to the answer. IHeaderDictionary.Append drops an empty value (it tests with
    /// StringValues.IsNullOrEmpty), and an empty field is a field the origin sent (RFC 9111 §3.1: all of them).
    /// </summary>
    private static void AppendLine(IHeaderDictionary headers, string name, string value) =>
        headers[name] = StringValues.Concat(headers[name], value);

    private static readonly HashSet<string> NotModifiedFields = new(StringComparer.OrdinalIgnoreCase)
    {
        HeaderNames.ETag, HeaderNames.LastModified, HeaderNames.CacheControl, HeaderNames.Expires, HeaderNames.Vary, HeaderNames.ContentLocation,
    };

    /// <summary>
    /// Fields that describe the whole stored body and would be false on a range cut from it: S3's checksums
    /// (<c>x-amz-checksum-crc32</c>, <c>-crc32c</c>, <c>-crc64nvme</c>, <c>-sha1</c>, <c>-sha256</c>, and their
    /// <c>-type</c>) and Content-MD5. S3 and MinIO send none on a 206; botocore (awscli, boto3) checks any it
    /// receives against the bytes it got, so a range carrying the whole object's failed every download.
    /// </summary>
    private static bool WholeObjectOnly(string name) =>
        name.StartsWith("x-amz-checksum-", StringComparison.OrdinalIgnoreCase) ||
        string.Equals(name, HeaderNames.ContentMD5, StringComparison.OrdinalIgnoreCase);

    /// <summary>The client's own conditional request, answered from the entry (RFC 9110 §13.2.2).</summary>
    private static bool NotModified(HttpRequest request, CachedResponse entry)
    {
        var ifNoneMatch = request.Headers.IfNoneMatch;
        if (ifNoneMatch.Count > 0)
        {
            var etag = entry.ETag;
            return etag is not null && ifNoneMatch.ToString().Split(',').Select(t => t.Trim())
                .Any(t => t == "*" || WeakEquals(t, etag));
        }

        // Without a Last-Modified, the entry's Date, else the time it was received, stands for it (RFC 9111 §4.3.2).
        return request.Headers.IfModifiedSince.Count > 0 &&
               CachedResponse.HttpDate(request.Headers.IfModifiedSince.ToString()) is { } since &&
               (entry.LastModified ?? entry.Date ?? entry.ReceivedAt) <= since;
    }

    /// <summary>If-Match (strong comparison) or, without it, If-Unmodified-Since, evaluated against the entry (RFC 9110 §13.1.1, §13.1.4).</summary>
    private static bool PreconditionFails(HttpRequest request, CachedResponse entry)
    {
        var ifMatch = request.Headers.IfMatch;
        if (ifMatch.Count > 0)
        {
            var etag = entry.ETag;
            return !ifMatch.ToString().Split(',').Select(t => t.Trim())
                .Any(t => t == "*" || (etag is not null && !etag.StartsWith("W/", StringComparison.Ordinal) && t == etag));
        }

        // An invalid date is ignored (§13.1.4), and so is the field when the entry has no Last-Modified to compare.
        return request.Headers.IfUnmodifiedSince.Count > 0 &&
               CachedResponse.HttpDate(request.Headers.IfUnmodifiedSince.ToString()) is { } since &&
               entry.LastModified is { } lastModified && lastModified > since;
    }

    private static bool WeakEquals(string a, string b) =>
        string.Equals(a.StartsWith("W/", StringComparison.Ordinal) ? a[2..] : a, b.StartsWith("W/", StringComparison.Ordinal) ? b[2..] : b, StringComparison.Ordinal);

    /// <summary>
    /// RFC 9110 §13.1.5: an entity tag holds only if it is strong and the entry's strong ETag is the same (a weak one
    /// never does); a date only if it is exactly the entry's Last-Modified, and that one is strong (a second or more
    /// before the entry's Date, when it has one). An entry without the validator asked about never matches.
    /// </summary>
    private static bool IfRangeHolds(string ifRange, CachedResponse entry)
    {
        if (ifRange.StartsWith('"') || ifRange.StartsWith("W/", StringComparison.Ordinal))
        {
            return ifRange[0] == '"' && entry.ETag is { } etag && etag == ifRange;
        }

        return CachedResponse.HttpDate(ifRange) is { } date && entry.LastModified is { } lastModified && date == lastModified &&
               (entry.Date is not { } served || lastModified <= served.AddSeconds(-1));
    }

    /// <summary>
    /// The part of a stored 200 the request is answered with: a single byte range served as 206; several ranges or a
    /// stale If-Range get the whole entity, and so does any other status (Range applies to a 200 only, RFC 9110 §14.2).
    /// </summary>
    internal static (long From, long To, bool Partial, bool Unsatisfiable) RangeOf(HttpRequest request, CachedResponse entry)
    {
        var range = request.Headers.Range.ToString();
        // Range is defined for GET alone (RFC 9110 §14.2): a HEAD with one gets the whole response's head.
        if (entry.Status != StatusCodes.Status200OK || range.Length == 0 || !HttpMethods.IsGet(request.Method) || !range.StartsWith("bytes=", StringComparison.OrdinalIgnoreCase) || range.Contains(',', StringComparison.Ordinal))
        {
            return (0, 0, false, false);
        }

        if (request.Headers.IfRange.ToString() is { Length: > 0 } ifRange && !IfRangeHolds(ifRange, entry))
        {
            return (0, 0, false, false);
        }

        var spec = range[6..].Split('-');
        if (spec.Length != 2)
        {
            return (0, 0, false, false);
        }

        var length = entry.Length;
        long from, to;
        if (spec[0].Length == 0)
        {
            if (!long.TryParse(spec[1], NumberStyles.None, CultureInfo.InvariantCulture, out var suffix) || suffix == 0)
            {
                return (0, 0, false, spec[1].Length > 0);
            }

            from = Math.Max(0, length - suffix);
            to = length - 1;
        }
        else
        {
            if (!long.TryParse(spec[0], NumberStyles.None, CultureInfo.InvariantCulture, out from))
            {
                return (0, 0, false, false);
            }

            to = spec[1].Length == 0 ? length - 1 : long.TryParse(spec[1], NumberStyles.None, CultureInfo.InvariantCulture, out var end) ? Math.Min(end, length - 1) : -1;
            if (to < 0)
            {
                return (0, 0, false, false);
            }
        }

        return from >= length || from > to ? (0, 0, false, true) : (from, to, true, false);
    }
}

/// <summary>How a body served from the cache went on after its read broke midway.</summary>
internal enum BrokenRead
{
    /// <summary>Read on from the store (the same bytes).</summary>
    Resumed,

    /// <summary>Finished from the origin: the same bytes of the same version (<see cref="OriginRemainder"/>).</summary>
    FromOrigin,

    /// <summary>The client's response was cut: a short body never passes for a whole one.</summary>
    Cut,
}
