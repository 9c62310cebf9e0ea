using System.Collections.Concurrent;
using System.Net;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A relay in front of s3rver that makes it behave as the tests need. With <c>conditionalWrites</c>, as AWS S3 and
/// MinIO behave: a PUT with <c>If-None-Match: *</c> of an object that exists gets 412 PreconditionFailed (s3rver
/// itself ignores the condition and overwrites), and a copy onto itself with <c>x-amz-copy-source-if-match</c> of
/// another ETag gets 412 too. With <see cref="CutReads"/>, the next GETs of an entry's body
/// end after a given number of body bytes, the connection dropped, as a store connection reset or an object
/// rewritten under its reader does. Every other request is passed to s3rver unchanged, its Host included, so
/// signatures still verify; the requests are logged.
/// </summary>
internal sealed class StoreRelay : IAsyncDisposable
{
    private static readonly HashSet<string> Unforwarded = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Content-Type", "Content-MD5", "Expect",
    };

    private readonly WebApplication _app;
    private readonly HttpClient _upstream;

    private readonly bool _conditionalWrites;
    private readonly ConcurrentQueue<long> _cuts = new();
    private long _cutEveryReadAfter = -1;

    private StoreRelay(WebApplication app, HttpClient upstream, int port, bool conditionalWrites)
    {
        _app = app;
        _upstream = upstream;
        _conditionalWrites = conditionalWrites;
        Url = new Uri($"http://127.0.0.1:{port}");
    }

    public Uri Url { get; }

    /// <summary>"METHOD /path" of every request, with " if-none-match" for conditional writes, in order.</summary>
    public IEnumerable<string> Requests => TimedRequests.Select(r => r.Request);

    /// <summary>"METHOD /path?query" of every request that asked for a 100 Continue before its body, in order.</summary>
    public ConcurrentQueue<string> ContinueAsked { get; } = new();

    /// <summary>The same, each with the Stopwatch timestamp it arrived at.</summary>
    public ConcurrentQueue<(string Request, long At)> TimedRequests { get; } = new();

    private int _readsCut;

    /// <summary>How many GETs were cut so far.</summary>
    public int ReadsCut => Volatile.Read(ref _readsCut);

    public static async Task<StoreRelay> StartAsync(Uri s3rver, bool conditionalWrites = true)
    {
        var upstream = new HttpClient(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false }) { BaseAddress = s3rver };
        StoreRelay? store = null;
        var (app, port) = await LoopbackApp.StartAsync(context => store!.RelayAsync(context));
        store = new StoreRelay(app, upstream, port, conditionalWrites);
        return store;
    }

    /// <summary>Runs once, before the next ranged GET of an entry (not a lease) goes to s3rver: a change made under a reader.</summary>
    public Func<Task>? BeforeNextEntryRead
    {
        get => Volatile.Read(ref _beforeNextEntryRead);
        set => Volatile.Write(ref _beforeNextEntryRead, value);
    }

    private Func<Task>? _beforeNextEntryRead;

    /// <summary>
    /// While set, lookups and reads of entries (not leases) wait for it before they go to s3rver: a slow store. A lookup
    /// is a HEAD, or a GET when the request would be answered with the entry's body (it opens the body with it).
    /// </summary>
    public Task? EntryLookupsWaitFor
    {
        get => Volatile.Read(ref _entryLookupsWaitFor);
        set => Volatile.Write(ref _entryLookupsWaitFor, value);
    }

    private Task? _entryLookupsWaitFor;

    /// <summary>
    /// While set, decides each lookup or read of an entry (not a lease): a status to answer with (an S3 error body) or
    /// null to pass it on, once the returned task ends. One lookup held and failed while others pass.
    /// </summary>
    public Func<HttpRequest, Task<HttpStatusCode?>>? EntryLookupDecides
    {
        get => Volatile.Read(ref _entryLookupDecides);
        set => Volatile.Write(ref _entryLookupDecides, value);
    }

    private Func<HttpRequest, Task<HttpStatusCode?>>? _entryLookupDecides;

    /// <summary>While set, lookups and reads of entries (not leases) are answered with this status and an S3 error body, as S3 throttling a prefix answers 503 SlowDown.</summary>
    public HttpStatusCode? EntryLookupsAnswer { get; set; }

    /// <summary>The same for GETs of entries only: a HEAD lookup is answered, the read of the body it found is not.</summary>
    public HttpStatusCode? EntryReadsAnswer { get; set; }

    /// <summary>
    /// Each lease write s3rver carried out, with how many requests the relay had seen by then: a request logged at or past
    /// that position came after the write was answered.
    /// </summary>
    public ConcurrentQueue<(string Path, int Seen)> LeaseWritesAnswered { get; } = new();

    /// <summary>While set, reads of a lease this relay has seen written (a read-back) wait for it before they go to s3rver.</summary>
    public Task? LeaseReadBacksWaitFor
    {
        get => Volatile.Read(ref _leaseReadBacksWaitFor);
        set => Volatile.Write(ref _leaseReadBacksWaitFor, value);
    }

    private Task? _leaseReadBacksWaitFor;

    /// <summary>While set, lease writes wait for it before they go to s3rver (a slow store under a miss's claim).</summary>
    public Task? LeaseWritesWaitFor
    {
        get => Volatile.Read(ref _leaseWritesWaitFor);
        set => Volatile.Write(ref _leaseWritesWaitFor, value);
    }

    private Task? _leaseWritesWaitFor;

    /// <summary>
    /// How many of the next renewals (writes of a lease this relay has seen written) to answer 503 SlowDown instead of
    /// passing them on: a busy store. The AWS SDK tries a refused write once more, so one renewal takes two.
    /// </summary>
    public int LeaseRenewalsToRefuse
    {
        get => Volatile.Read(ref _leaseRenewalsToRefuse);
        set => Volatile.Write(ref _leaseRenewalsToRefuse, value);
    }

    private int _leaseRenewalsToRefuse;

    private bool TakeRenewalRefusal()
    {
        int left;
        do
        {
            left = Volatile.Read(ref _leaseRenewalsToRefuse);
            if (left <= 0)
            {
                return false;
            }
        }
        while (Interlocked.CompareExchange(ref _leaseRenewalsToRefuse, left - 1, left) != left);

        return true;
    }

    /// <summary>Runs once, before the next read-back of a lease goes to s3rver: another sidecar's lease write landing just after this one's.</summary>
    public Func<Task>? BeforeNextLeaseReadBack
    {
        get => Volatile.Read(ref _beforeNextLeaseReadBack);
        set => Volatile.Write(ref _beforeNextLeaseReadBack, value);
    }

    private Func<Task>? _beforeNextLeaseReadBack;
    private readonly ConcurrentDictionary<string, bool> _leasesWritten = new();

    /// <summary>
    /// How far the store's clock has moved on, as lease reads see it: their Date is this much later than s3rver's, the
    /// lease's Last-Modified as written. A lease ages by the store's clock without the test waiting for it.
    /// </summary>
    public TimeSpan LeaseReadsClockAhead { get; set; }

    /// <summary>Every part of a multipart upload is held this long before it goes to s3rver (a slow or loaded store).</summary>
    public TimeSpan PartDelay { get; set; }

    /// <summary>While set, every part of a multipart upload waits for it before it goes to s3rver (an upload that takes its time).</summary>
    public Task? PartsWaitFor
    {
        get => Volatile.Read(ref _partsWaitFor);
        set => Volatile.Write(ref _partsWaitFor, value);
    }

    private Task? _partsWaitFor;

    /// <summary>
    /// While set, every multipart upload's completion (a POST with an uploadId) waits for it before it goes to s3rver: a
    /// store joining a large object's parts, which S3 documents may take minutes.
    /// </summary>
    public Task? CompletionsWaitFor
    {
        get => Volatile.Read(ref _completionsWaitFor);
        set => Volatile.Write(ref _completionsWaitFor, value);
    }

    private Task? _completionsWaitFor;

    /// <summary>Once the reads of <see cref="CutReads"/> are used up, every GET of an entry's body ends after <paramref name="afterBytes"/>.</summary>
    public void CutEveryRead(long afterBytes) => Volatile.Write(ref _cutEveryReadAfter, afterBytes);

    private readonly ConcurrentQueue<long> _stalls = new();
    private int _readsStalled;

    /// <summary>How many GETs were stalled so far.</summary>
    public int ReadsStalled => Volatile.Read(ref _readsStalled);

    /// <summary>The next GETs of entries' bodies (not leases), one per value, send that many body bytes and then nothing, the connection kept open.</summary>
    public void StallReads(params long[] afterBytes)
    {
        foreach (var bytes in afterBytes)
        {
            _stalls.Enqueue(bytes);
        }
    }

    /// <summary>The next GETs of entries' bodies (not leases), one per value, end after that many body bytes.</summary>
    public void CutReads(params long[] afterBytes)
    {
        foreach (var bytes in afterBytes)
        {
            _cuts.Enqueue(bytes);
        }
    }

    private async Task RelayAsync(HttpContext context)
    {
        var request = context.Request;
        var target = request.Path + request.QueryString;
        var conditional = _conditionalWrites && HttpMethods.IsPut(request.Method) && request.Headers.IfNoneMatch.ToString() == "*";
        TimedRequests.Enqueue(($"{request.Method} {request.Path}{(conditional ? " if-none-match" : "")}", System.Diagnostics.Stopwatch.GetTimestamp()));
        if (request.Headers.Expect.ToString().Equals("100-continue", StringComparison.OrdinalIgnoreCase))
        {
            ContinueAsked.Enqueue($"{request.Method} {target}");
        }

        if (HttpMethods.IsGet(request.Method) && request.Headers.Range.Count > 0 && !request.Path.Value!.EndsWith(".fill", StringComparison.Ordinal) &&
            Interlocked.Exchange(ref _beforeNextEntryRead, null) is { } change)
        {
            await change();
        }

        var decided = (HttpMethods.IsHead(request.Method) || HttpMethods.IsGet(request.Method)) &&
                      !request.Path.Value!.EndsWith(".fill", StringComparison.Ordinal) && EntryLookupDecides is { } decides
            ? await decides(request)
            : null;
        if ((HttpMethods.IsHead(request.Method) || HttpMethods.IsGet(request.Method)) &&
            !request.Path.Value!.EndsWith(".fill", StringComparison.Ordinal) &&
            (decided ?? EntryLookupsAnswer ?? (HttpMethods.IsGet(request.Method) ? EntryReadsAnswer : null)) is { } refusal)
        {
            context.Response.StatusCode = (int)refusal;
            context.Response.ContentType = "application/xml";
            await context.Response.WriteAsync("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>" +
                                              "<Message>Please reduce your request rate.</Message><RequestId>relay</RequestId></Error>");
            return;
        }

        if ((HttpMethods.IsHead(request.Method) || HttpMethods.IsGet(request.Method)) &&
            !request.Path.Value!.EndsWith(".fill", StringComparison.Ordinal) && EntryLookupsWaitFor is { } release)
        {
            await release.WaitAsync(context.RequestAborted);
        }

        var lease = request.Path.Value!.EndsWith(".fill", StringComparison.Ordinal);
        if (lease && HttpMethods.IsPut(request.Method))
        {
            if (LeaseWritesWaitFor is { } writeRelease)
            {
                await writeRelease.WaitAsync(context.RequestAborted);
            }

            if (_leasesWritten.ContainsKey(request.Path.Value) && TakeRenewalRefusal())
            {
                context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                context.Response.ContentType = "application/xml";
                await context.Response.WriteAsync("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>" +
                                                  "<Message>Please reduce your request rate.</Message><RequestId>relay</RequestId></Error>");
                return;
            }

            _leasesWritten[request.Path.Value] = true;
        }
        else if (lease && HttpMethods.IsHead(request.Method) && _leasesWritten.ContainsKey(request.Path.Value))
        {
            if (LeaseReadBacksWaitFor is { } readBackRelease)
            {
                await readBackRelease.WaitAsync(context.RequestAborted);
            }

            if (Interlocked.Exchange(ref _beforeNextLeaseReadBack, null) is { } replace)
            {
                await replace();
            }
        }

        if (HttpMethods.IsPut(request.Method) && request.Query.ContainsKey("partNumber"))
        {
            if (PartDelay > TimeSpan.Zero)
            {
                await Task.Delay(PartDelay, context.RequestAborted);
            }

            if (PartsWaitFor is { } partRelease)
            {
                await partRelease.WaitAsync(context.RequestAborted);
            }
        }

        if (HttpMethods.IsPost(request.Method) && request.Query.ContainsKey("uploadId") && CompletionsWaitFor is { } completionRelease)
        {
            await completionRelease.WaitAsync(context.RequestAborted);
        }

        if (conditional)
        {
            using var head = await _upstream.SendAsync(new HttpRequestMessage(HttpMethod.Head, target));
            if (head.StatusCode == HttpStatusCode.OK)
            {
                await PreconditionFailedAsync(context);
                return;
            }
        }

        if (_conditionalWrites && HttpMethods.IsPut(request.Method) && request.Headers["x-amz-copy-source-if-match"].ToString() is { Length: > 0 } copyIfMatch)
        {
            // sidekick copies an entry onto itself only (new metadata), so the source is the target.
            using var head = await _upstream.SendAsync(new HttpRequestMessage(HttpMethod.Head, target));
            if (head.StatusCode == HttpStatusCode.OK && head.Headers.ETag?.ToString() != copyIfMatch)
            {
                await PreconditionFailedAsync(context);
                return;
            }
        }

        using var forward = new HttpRequestMessage(new HttpMethod(request.Method), target);
        if (request.ContentLength is > 0 || HttpMethods.IsPut(request.Method) || HttpMethods.IsPost(request.Method))
        {
            forward.Content = new StreamContent(request.Body);
            forward.Content.Headers.ContentLength = request.ContentLength;
            if (request.ContentType is { } type)
            {
                forward.Content.Headers.TryAddWithoutValidation("Content-Type", type);
            }

            if (request.Headers.ContentMD5.Count > 0)
            {
                forward.Content.Headers.TryAddWithoutValidation("Content-MD5", request.Headers.ContentMD5.ToString());
            }
        }

        foreach (var (name, values) in request.Headers)
        {
            if (!Unforwarded.Contains(name) && !forward.Headers.TryAddWithoutValidation(name, (IEnumerable<string?>)values))
            {
                forward.Content?.Headers.TryAddWithoutValidation(name, (IEnumerable<string?>)values);
            }
        }

        using var answer = await _upstream.SendAsync(forward, HttpCompletionOption.ResponseHeadersRead, context.RequestAborted);
        if (lease && HttpMethods.IsPut(request.Method))
        {
            LeaseWritesAnswered.Enqueue((request.Path.Value, TimedRequests.Count));
        }

        // Only a body read is cut (a whole GET's lookup is one too), never a "no such key" answer.
        var cutAfter = -1L;
        var cut = HttpMethods.IsGet(request.Method) && answer.IsSuccessStatusCode && !request.Path.Value!.EndsWith(".fill", StringComparison.Ordinal) &&
                  (_cuts.TryDequeue(out cutAfter) || (cutAfter = Volatile.Read(ref _cutEveryReadAfter)) >= 0);
        var stallAfter = -1L;
        var stall = !cut && HttpMethods.IsGet(request.Method) && answer.IsSuccessStatusCode && !request.Path.Value!.EndsWith(".fill", StringComparison.Ordinal) &&
                    _stalls.TryDequeue(out stallAfter);
        context.Response.StatusCode = (int)answer.StatusCode;
        foreach (var (name, values) in answer.Headers.Concat(answer.Content.Headers))
        {
            if (!Unforwarded.Contains(name) || name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase) || name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase))
            {
                context.Response.Headers[name] = values.ToArray();
            }
        }

        if (lease && HttpMethods.IsHead(request.Method) && LeaseReadsClockAhead != TimeSpan.Zero)
        {
            context.Response.Headers.Date = ((answer.Headers.Date ?? DateTimeOffset.UtcNow) + LeaseReadsClockAhead).ToString("r", System.Globalization.CultureInfo.InvariantCulture);
        }

        if (!cut && !stall)
        {
            await answer.Content.CopyToAsync(context.Response.Body, context.RequestAborted);
            return;
        }

        // The declared Content-Length stays: the reader sees a body that ends short, then the connection gone (a cut),
        // or nothing more for as long as it waits (a stall).
        await using var body = await answer.Content.ReadAsStreamAsync(context.RequestAborted);
        var buffer = new byte[16 * 1024];
        for (var left = cut ? cutAfter : stallAfter; left > 0;)
        {
            var read = await body.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, left)), context.RequestAborted);
            if (read == 0)
            {
                break;
            }

            await context.Response.Body.WriteAsync(buffer.AsMemory(0, read), context.RequestAborted);
            left -= read;
        }

        await context.Response.Body.FlushAsync(context.RequestAborted);
        if (stall)
        {
            Interlocked.Increment(ref _readsStalled);
            await Task.Delay(Timeout.Infinite, context.RequestAborted).ContinueWith(_ => { }, TaskScheduler.Default); // until the reader gives up
            return;
        }

        Interlocked.Increment(ref _readsCut);
        context.Abort();
    }

    /// <summary>S3's answer to a write whose precondition failed.</summary>
    private static Task PreconditionFailedAsync(HttpContext context)
    {
        context.Response.StatusCode = StatusCodes.Status412PreconditionFailed;
        context.Response.ContentType = "application/xml";
        return context.Response.WriteAsync("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PreconditionFailed</Code>" +
                                           "<Message>At least one of the pre-conditions you specified did not hold</Message></Error>");
    }

    public async ValueTask DisposeAsync()
    {
        await _app.DisposeAsync();
        _upstream.Dispose();
    }
}
