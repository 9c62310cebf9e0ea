using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using Amazon.S3.Model;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;
using Sidekick.Forwarding;
using Sidekick.Health;

namespace Sidekick.Caching;

/// <summary>
/// The shared S3 cache in front of the proxy (see docs/cache.md for the rules). GET and HEAD are looked up;
/// misses are filled while they stream to the client; stored responses are served with a correct Age and
/// confirmed with the backend whenever RFC 9111 or the requester's credentials demand it; PUT, POST and
/// DELETE invalidate. Store trouble never fails a request the backends can serve: it only bypasses the cache.
/// </summary>
internal sealed class ResponseCache : IDisposable
{
    /// <summary>The cache's outcome for a request (HIT, MISS, REVALIDATED, BYPASS) on every response it saw.</summary>
    public const string CacheHeader = "X-Cache";

    private static readonly string[] Conditionals =
        [HeaderNames.IfNoneMatch, HeaderNames.IfModifiedSince, HeaderNames.IfMatch, HeaderNames.IfUnmodifiedSince, HeaderNames.IfRange, HeaderNames.Range];

    private readonly CacheOptions _options;
    private readonly S3CacheStore _store;
    private readonly CacheHealth _health;
    private readonly PartBuffers _partBuffers;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, Task> _fills = new();
    private readonly ConcurrentDictionary<string, CachedResponse> _refreshed = new();
    private int _activeFills;

    public ResponseCache(CacheOptions options, TimeProvider time)
    {
        _options = options;
        // A few spare parts serve a steady trickle of fills; a burst allocates more and gives them back to the GC,
        // so an idle sidecar does not keep the burst's memory.
        _partBuffers = new PartBuffers(options.PartSize, retain: 4);
        _time = time;
        _store = new S3CacheStore(options);
        Metrics = new CacheMetrics();
        _health = new CacheHealth(_store, Metrics, options.HealthInterval, time);
    }

    public CacheMetrics Metrics { get; }

    public CacheHealth Health => _health;

    /// <summary>Null when SIDEKICK_CACHE_ENDPOINT is unset; throws a usage error naming a bad variable.</summary>
    public static ResponseCache? FromEnvironment(IReadOnlyDictionary<string, string?> env, TimeProvider time) =>
        CacheOptions.FromEnvironment(env) is { } options ? new ResponseCache(options, time) : null;

    public async Task HandleAsync(HttpContext context, ICacheOrigin origin)
    {
        var request = context.Request;
        if (!HttpMethods.IsGet(request.Method) && !HttpMethods.IsHead(request.Method))
        {
            await origin.ForwardAsync(context);
            if (IsUnsafe(request.Method) && context.Response.StatusCode < 400 && _health.Online)
            {
                await InvalidateAsync(context);
            }

            return;
        }

        var requestControl = RequestControl(request);
        if (!_health.Online || requestControl.Has("no-store"))
        {
            await BypassAsync(context, origin);
            return;
        }

        var key = CacheKey.For(context);
        Lookup? found;
        try
        {
            found = await FindAsync(key, request, context.RequestAborted);
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !context.RequestAborted.IsCancellationRequested)
        {
            _health.MarkOffline();
            await BypassAsync(context, origin);
            return;
        }

        if (found is { } hit)
        {
            await HitAsync(context, origin, hit, requestControl);
        }
        else
        {
            await MissAsync(context, origin, key, requestControl);
        }
    }

    public void Dispose()
    {
        _health.Dispose();
        _store.Dispose();
        Metrics.Dispose();
    }

    private static bool IsUnsafe(string method) =>
        HttpMethods.IsPut(method) || HttpMethods.IsPost(method) || HttpMethods.IsDelete(method) || HttpMethods.IsPatch(method);

    private static CacheControl RequestControl(HttpRequest request)
    {
        var control = request.Headers.CacheControl;
        // HTTP/1.0 Pragma: no-cache counts only without Cache-Control (RFC 9111 §5.4).
        return CacheControl.Parse(control.Count == 0 && request.Headers.Pragma.ToString().Contains("no-cache", StringComparison.OrdinalIgnoreCase) ? "no-cache" : control);
    }

    private async Task BypassAsync(HttpContext context, ICacheOrigin origin)
    {
        Metrics.Bypass();
        context.Response.Headers[CacheHeader] = "BYPASS";
        await origin.ForwardAsync(context);
    }

    private readonly record struct Lookup(string Key, CachedResponse Entry);

    /// <summary>Finds the stored response for this request: the plain key, or the variant its Vary marker selects.</summary>
    private async Task<Lookup?> FindAsync(string key, HttpRequest request, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.StoreTimeout);
        var head = await _store.HeadAsync(key, timeout.Token);
        if (head is not { } found)
        {
            return null;
        }

        if (found.VaryNames is { Length: > 0 } varyNames)
        {
            var names = varyNames.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            var variantKey = CacheKey.Variant(key, names.Select(n => request.Headers[n].ToString()).ToArray());
            var variant = await _store.HeadAsync(variantKey, timeout.Token);
            return variant is { Entry: { } variantEntry } ? new Lookup(variantKey, Newest(variantKey, variantEntry)) : null;
        }

        return found.Entry is { } entry ? new Lookup(key, Newest(key, entry)) : null;
    }

    /// <summary>The stored entry, or the headers a later 304 refreshed when those are newer (same object only).</summary>
    private CachedResponse Newest(string key, CachedResponse stored) =>
        _refreshed.TryGetValue(key, out var refreshed) && refreshed.ReceivedAt > stored.ReceivedAt &&
        refreshed.ETag == stored.ETag && refreshed.Length == stored.Length
            ? refreshed
            : stored;

    private async Task MissAsync(HttpContext context, ICacheOrigin origin, string key, CacheControl requestControl)
    {
        Metrics.Miss();
        var request = context.Request;
        if (requestControl.Has("only-if-cached"))
        {
            context.Response.StatusCode = StatusCodes.Status504GatewayTimeout;
            context.Response.Headers[CacheHeader] = "MISS";
            return;
        }

        // HEAD, ranges and the client's own conditionals are answered by the backend; only full GETs fill.
        if (HttpMethods.IsHead(request.Method) || Conditionals.Any(request.Headers.ContainsKey))
        {
            context.Response.Headers[CacheHeader] = "MISS";
            await origin.ForwardAsync(context);
            return;
        }

        // Concurrent misses for one entry: one fills, the others wait for it and then read the entry.
        var filled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = _fills.GetOrAdd(key, filled.Task);
        if (running != filled.Task)
        {
            await WaitForFillAsync(running, context.RequestAborted);
            Lookup? after = null;
            try
            {
                after = await FindAsync(key, request, context.RequestAborted);
            }
            catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !context.RequestAborted.IsCancellationRequested)
            {
                _health.MarkOffline();
            }

            if (after is { } hit)
            {
                await HitAsync(context, origin, hit, requestControl);
            }
            else
            {
                context.Response.Headers[CacheHeader] = "MISS";
                await origin.ForwardAsync(context);
            }

            return;
        }

        try
        {
            if (Interlocked.Increment(ref _activeFills) > _options.MaxFills)
            {
                context.Response.Headers[CacheHeader] = "MISS";
                await origin.ForwardAsync(context);
                return;
            }

            var fill = await FetchAndServeAsync(context, origin, key);
            if (fill is not null)
            {
                // The client has its whole body; the entry becomes visible when the upload completes.
                await fill;
            }
        }
        finally
        {
            Interlocked.Decrement(ref _activeFills);
            _fills.TryRemove(new KeyValuePair<string, Task>(key, filled.Task));
            filled.TrySetResult();
        }
    }

    private static async Task WaitForFillAsync(Task fill, CancellationToken cancellationToken)
    {
        try
        {
            await fill.WaitAsync(TimeSpan.FromMinutes(5), cancellationToken);
        }
        catch (TimeoutException)
        {
        }
    }

    private async Task HitAsync(HttpContext context, ICacheOrigin origin, Lookup hit, CacheControl requestControl)
    {
        var request = context.Request;
        var responseControl = CacheControl.Parse(hit.Entry.Header(HeaderNames.CacheControl));
        var credentials = CachePolicy.CarriesCredentials(request);
        var now = _time.GetUtcNow();
        var decision = CachePolicy.Decide(hit.Entry, requestControl, responseControl, now, _options, credentials);
        if (decision == CacheDecision.Revalidate && requestControl.Has("only-if-cached"))
        {
            // §5.2.1.7: nothing may be served without asking the backend, and the client forbade asking.
            context.Response.StatusCode = StatusCodes.Status504GatewayTimeout;
            context.Response.Headers[CacheHeader] = "MISS";
            return;
        }

        switch (decision)
        {
            case CacheDecision.Serve:
                if (await ServeAsync(context, hit, "HIT"))
                {
                    Metrics.Hit();
                    return;
                }

                break;
            case CacheDecision.ServeAndRevalidate:
                if (await ServeAsync(context, hit, "HIT"))
                {
                    Metrics.Hit();
                    var snapshot = RevalidationSnapshot.From(context);
                    _ = Task.Run(() => RevalidateInBackgroundAsync(origin, snapshot, hit));
                    return;
                }

                break;
            default:
                await RevalidateAsync(context, origin, hit, requestControl, responseControl);
                return;
        }

        // The store could not be read: the backend answers instead.
        await BypassAsync(context, origin);
    }

    /// <summary>
    /// Asks the backend whether the stored response is still good, with the requester's own request made
    /// conditional: a 304 both confirms the entry and proves the requester may read it.
    /// </summary>
    private async Task RevalidateAsync(HttpContext context, ICacheOrigin origin, Lookup hit, CacheControl requestControl, CacheControl responseControl)
    {
        var entry = hit.Entry;
        if (entry.ETag is null && entry.LastModified is null)
        {
            // Nothing to validate with: fetch a fresh copy and replace the entry.
            var fill = await FetchAndServeAsync(context, origin, hit.Key);
            if (fill is not null)
            {
                await fill;
            }

            return;
        }

        if (origin.Pick() is not var (site, backend))
        {
            await StaleOrForwardAsync(context, origin, hit, requestControl, responseControl);
            return;
        }

        using var message = await BuildRequestAsync(context, backend, HttpMethods.IsHead(context.Request.Method) ? HttpMethod.Head : HttpMethod.Get);
        AddValidators(message, entry);
        var requestTime = _time.GetUtcNow();
        if (await SendAsync(origin, site, backend, message, context.RequestAborted) is not { } response)
        {
            await StaleOrForwardAsync(context, origin, hit, requestControl, responseControl);
            return;
        }

        using (response)
        {
            try
            {
                var status = (int)response.StatusCode;
                backend.Stats.RecordCall(status, _time.GetUtcNow() - requestTime, 0, 0);
                if (status == StatusCodes.Status304NotModified)
                {
                    var refreshed = Refresh(entry, response, requestTime);
                    _ = Task.Run(() => UpdateMetadataAsync(hit.Key, refreshed));
                    if (await ServeAsync(context, hit with { Entry = refreshed }, "REVALIDATED"))
                    {
                        Metrics.Revalidation();
                        return;
                    }

                    await BypassAsync(context, origin);
                    return;
                }

                if (status is 404 or 410)
                {
                    await EvictAsync(hit.Key);
                }
                else if (status >= 500 && CachePolicy.MayServeStaleOnError(entry, requestControl, responseControl, _time.GetUtcNow(), _options) &&
                         await ServeAsync(context, hit, "HIT"))
                {
                    Metrics.Hit();
                    return;
                }

                // 200 with a new body replaces the entry; anything else passes through unchanged, and never
                // cached bytes: a 403 for this requester stays a 403.
                var fill = status == 200 && HttpMethods.IsGet(context.Request.Method) ? StartFill(context, hit.Key, response, requestTime) : null;
                context.Response.Headers[CacheHeader] = "MISS";
                await PassThroughAsync(context, response, fill);
            }
            finally
            {
                backend.EndRequest();
            }
        }
    }

    private async Task StaleOrForwardAsync(HttpContext context, ICacheOrigin origin, Lookup hit, CacheControl requestControl, CacheControl responseControl)
    {
        if (CachePolicy.MayServeStaleOnError(hit.Entry, requestControl, responseControl, _time.GetUtcNow(), _options) &&
            await ServeAsync(context, hit, "HIT"))
        {
            Metrics.Hit();
            return;
        }

        context.Response.Headers[CacheHeader] = "MISS";
        await origin.ForwardAsync(context);
    }

    /// <summary>
    /// Fetches the full response from a backend and streams it to the client, filling the cache at the same
    /// time when the response is storable. Returns the fill's completion, or null when nothing is being stored.
    /// </summary>
    private async Task<Task?> FetchAndServeAsync(HttpContext context, ICacheOrigin origin, string key)
    {
        if (origin.Pick() is not var (site, backend))
        {
            context.Response.Headers[CacheHeader] = "MISS";
            await origin.ForwardAsync(context);
            return null;
        }

        using var message = await BuildRequestAsync(context, backend, HttpMethod.Get);
        var requestTime = _time.GetUtcNow();
        if (await SendAsync(origin, site, backend, message, context.RequestAborted) is not { } response)
        {
            context.Response.Headers[CacheHeader] = "MISS";
            await origin.ForwardAsync(context); // retries elsewhere
            return null;
        }

        using (response)
        {
            try
            {
                backend.Stats.RecordCall((int)response.StatusCode, _time.GetUtcNow() - requestTime, 0, 0);
                var fill = StartFill(context, key, response, requestTime);
                context.Response.Headers[CacheHeader] = "MISS";
                return await PassThroughAsync(context, response, fill);
            }
            finally
            {
                backend.EndRequest();
            }
        }
    }

    /// <summary>Creates the fill when the response may be stored (RFC 9111 §3), with its Vary marker.</summary>
    private CacheFill? StartFill(HttpContext context, string key, HttpResponseMessage response, DateTimeOffset requestTime)
    {
        var headers = Collect(response);
        var requestControl = RequestControl(context.Request);
        var responseControl = CacheControl.Parse(Header(headers, HeaderNames.CacheControl));
        var length = response.Content.Headers.ContentLength;
        if (!CachePolicy.IsStorable((int)response.StatusCode, requestControl, responseControl, headers, length, _options))
        {
            return null;
        }

        var varyNames = (Header(headers, HeaderNames.Vary) ?? "")
            .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(n => n.ToLowerInvariant()).Distinct().Order(StringComparer.Ordinal).ToArray();
        var varyValues = varyNames.Select(n => context.Request.Headers[n].ToString()).ToArray();
        var responseTime = _time.GetUtcNow();
        var date = CachedResponse.HttpDate(Header(headers, HeaderNames.Date) ?? response.Headers.Date?.ToString("r", CultureInfo.InvariantCulture));
        var entry = new CachedResponse
        {
            Status = 200,
            Headers = headers.Where(h => CachedResponse.KeepHeader(h.Key)).ToArray(),
            Length = length!.Value,
            ReceivedAt = responseTime,
            InitialAge = CachePolicy.InitialAge(Header(headers, HeaderNames.Age), date, requestTime, responseTime),
            Date = date,
            VaryNames = varyNames,
            VaryValues = varyValues,
            FilledWithCredentials = CachePolicy.CarriesCredentials(context.Request),
        };
        var serialized = entry.Serialize();
        if (!CachedResponse.FitsInMetadata(serialized))
        {
            return null; // too many headers for S3 user metadata: serve, do not store
        }

        var entryKey = key;
        if (varyNames.Length > 0)
        {
            entryKey = CacheKey.Variant(key, varyValues);
            var marker = new Dictionary<string, string> { ["sidekick-vary"] = string.Join(',', varyNames) };
            _ = Task.Run(async () =>
            {
                try
                {
                    await _store.PutAsync(key, ReadOnlyMemory<byte>.Empty, marker, CancellationToken.None);
                }
                catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
                {
                    _health.MarkOffline();
                }
            });
        }

        return new CacheFill(_store, entryKey, new Dictionary<string, string> { ["sidekick"] = serialized }, entry.Length, _options, _partBuffers, Metrics);
    }

    /// <summary>Sends the backend's status, headers and body to the client, feeding the fill on the way.</summary>
    private static async Task<Task?> PassThroughAsync(HttpContext context, HttpResponseMessage response, CacheFill? fill)
    {
        context.Response.StatusCode = (int)response.StatusCode;
        await SidekickTransformer.Instance.TransformResponseAsync(context, response, context.RequestAborted);
        if (HttpMethods.IsHead(context.Request.Method))
        {
            fill?.Abandon();
            return null;
        }

        var buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            await using var body = await response.Content.ReadAsStreamAsync(context.RequestAborted);
            int read;
            while (true)
            {
                try
                {
                    read = await body.ReadAsync(buffer, context.RequestAborted);
                }
                catch (Exception ex) when (ex is IOException or HttpRequestException && !context.RequestAborted.IsCancellationRequested)
                {
                    // The backend died mid-body: never store or complete a truncated response.
                    fill?.Abandon();
                    context.Abort();
                    return null;
                }

                if (read == 0)
                {
                    break;
                }

                try
                {
                    await context.Response.Body.WriteAsync(buffer.AsMemory(0, read), context.RequestAborted);
                }
                catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
                {
                    fill?.Abandon(); // the client went away: leave no entry behind
                    return null;
                }

                fill?.Offer(buffer.AsSpan(0, read));
            }
        }
        catch (OperationCanceledException)
        {
            fill?.Abandon();
            return null;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        return fill?.CompleteAsync();
    }

    /// <summary>Serves a stored response. False when the store could not be read before anything was sent.</summary>
    private async Task<bool> ServeAsync(HttpContext context, Lookup hit, string outcome)
    {
        var entry = hit.Entry;
        var request = context.Request;
        var response = context.Response;
        var age = (long)CachePolicy.CurrentAge(entry, _time.GetUtcNow()).TotalSeconds;

        if (NotModified(request, entry))
        {
            response.StatusCode = StatusCodes.Status304NotModified;
            foreach (var name in new[] { HeaderNames.ETag, HeaderNames.LastModified, HeaderNames.CacheControl, HeaderNames.Expires, HeaderNames.Vary })
            {
                if (entry.Header(name) is { } value)
                {
                    response.Headers[name] = value;
                }
            }

            response.Headers.Age = age.ToString(CultureInfo.InvariantCulture);
            response.Headers[CacheHeader] = outcome;
            return true;
        }

        var (from, to, partial, unsatisfiable) = RangeOf(request, entry);
        if (unsatisfiable)
        {
            response.StatusCode = StatusCodes.Status416RangeNotSatisfiable;
            response.Headers.ContentRange = $"bytes */{entry.Length}";
            response.Headers[CacheHeader] = outcome;
            return true;
        }

        GetObjectResponse? stored = null;
        if (!HttpMethods.IsHead(request.Method))
        {
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
                timeout.CancelAfter(_options.StoreTimeout);
                stored = await _store.OpenAsync(hit.Key, partial ? from : null, partial ? to : null, timeout.Token);
            }
            catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !context.RequestAborted.IsCancellationRequested)
            {
                _health.MarkOffline();
                return false;
            }
        }

        using (stored)
        {
            response.StatusCode = partial ? StatusCodes.Status206PartialContent : entry.Status;
            foreach (var (name, value) in entry.Headers)
            {
                if (!string.Equals(name, HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase))
                {
                    response.Headers.Append(name, value);
                }
            }

            response.Headers.Server = "SideKick";
            response.Headers.Age = age.ToString(CultureInfo.InvariantCulture);
            response.Headers[CacheHeader] = outcome;
            response.Headers.AcceptRanges = "bytes";
            response.ContentLength = partial ? to - from + 1 : entry.Length;
            if (partial)
            {
                response.Headers.ContentRange = $"bytes {from}-{to}/{entry.Length}";
            }

            if (stored is null)
            {
                return true;
            }

            try
            {
                await using var body = stored.ResponseStream;
                var buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
                try
                {
                    int read;
                    while ((read = await body.ReadAsync(buffer, context.RequestAborted)) > 0)
                    {
                        await response.Body.WriteAsync(buffer.AsMemory(0, read), context.RequestAborted);
                        Metrics.Served(read);
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }
            catch (Exception ex) when (S3CacheStore.IsStoreError(ex) && !context.RequestAborted.IsCancellationRequested)
            {
                // Headers are out: abort rather than send a truncated body.
                _health.MarkOffline();
                context.Abort();
            }
        }

        return true;
    }

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

        return request.Headers.IfModifiedSince.Count > 0 &&
               CachedResponse.HttpDate(request.Headers.IfModifiedSince.ToString()) is { } since &&
               entry.LastModified is { } lastModified && lastModified <= since;
    }

    private static bool WeakEquals(string a, string b) =>
        string.Equals(a.StartsWith("W/", StringComparison.Ordinal) ? a[2..] : a, b.StartsWith("W/", StringComparison.Ordinal) ? b[2..] : b, StringComparison.Ordinal);

    /// <summary>A single byte range served as 206; several ranges or a stale If-Range get the whole entity.</summary>
    private static (long From, long To, bool Partial, bool Unsatisfiable) RangeOf(HttpRequest request, CachedResponse entry)
    {
        var range = request.Headers.Range.ToString();
        if (range.Length == 0 || !range.StartsWith("bytes=", StringComparison.OrdinalIgnoreCase) || range.Contains(',', StringComparison.Ordinal))
        {
            return (0, 0, false, false);
        }

        if (request.Headers.IfRange.ToString() is { Length: > 0 } ifRange && ifRange != entry.ETag && CachedResponse.HttpDate(ifRange) != entry.LastModified)
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

    /// <summary>Merges the 304's headers into the stored ones (RFC 9111 §4.3.4) and restarts the age clock.</summary>
    private CachedResponse Refresh(CachedResponse entry, HttpResponseMessage notModified, DateTimeOffset requestTime)
    {
        var updates = Collect(notModified).Where(h => CachedResponse.KeepHeader(h.Key) &&
            !string.Equals(h.Key, HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase)).ToArray();
        var headers = entry.Headers.Where(h => !updates.Any(u => string.Equals(u.Key, h.Key, StringComparison.OrdinalIgnoreCase))).Concat(updates).ToArray();
        var responseTime = _time.GetUtcNow();
        var date = notModified.Headers.Date ?? responseTime;
        return entry with
        {
            Headers = headers,
            ReceivedAt = responseTime,
            Date = date,
            InitialAge = CachePolicy.InitialAge(notModified.Headers.Age is { } a ? ((long)a.TotalSeconds).ToString(CultureInfo.InvariantCulture) : null, date, requestTime, responseTime),
        };
    }

    /// <summary>
    /// Stores refreshed headers: in this process at once (so the next request sees them), and in the bucket
    /// for the other sidecars (a server-side copy onto itself with new metadata).
    /// </summary>
    private async Task UpdateMetadataAsync(string key, CachedResponse entry)
    {
        if (_refreshed.Count > 10_000)
        {
            _refreshed.Clear(); // a bound, not an LRU: losing an overlay only costs one more revalidation
        }

        _refreshed[key] = entry;
        var serialized = entry.Serialize();
        if (!CachedResponse.FitsInMetadata(serialized))
        {
            return;
        }

        try
        {
            await _store.UpdateMetadataAsync(key, new Dictionary<string, string> { ["sidekick"] = serialized }, CancellationToken.None);
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            // A failed refresh is not a store outage: this sidecar still has the refreshed headers in memory.
            Metrics.StoreError();
        }
    }

    private async Task EvictAsync(string key)
    {
        _refreshed.TryRemove(key, out _);
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await _store.DeleteEntryAsync(key, timeout.Token);
            Metrics.Evicted();
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            _health.MarkOffline();
        }
    }

    /// <summary>PUT, POST, DELETE through sidekick drop the entries for their URL (with and without query).</summary>
    private async Task InvalidateAsync(HttpContext context)
    {
        await EvictAsync(CacheKey.For(context));
        await EvictAsync(CacheKey.For(context, withQuery: false));
    }

    private async Task RevalidateInBackgroundAsync(ICacheOrigin origin, RevalidationSnapshot snapshot, Lookup hit)
    {
        if (origin.Pick() is not var (site, backend) || (hit.Entry.ETag is null && hit.Entry.LastModified is null))
        {
            return;
        }

        try
        {
            using var message = snapshot.ToRequest(backend.DestinationPrefix, hit.Entry);
            var requestTime = _time.GetUtcNow();
            using var response = await site.Invoker.SendAsync(message, CancellationToken.None);
            if (response.StatusCode == HttpStatusCode.NotModified)
            {
                await UpdateMetadataAsync(hit.Key, Refresh(hit.Entry, response, requestTime));
            }
            else if ((int)response.StatusCode is 200 or 404 or 410)
            {
                await EvictAsync(hit.Key); // the next request fetches the new version
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException or OperationCanceledException)
        {
            origin.ReportTransportFailure(backend, TransportErrors.Describe(ex));
        }
    }

    private static async Task<HttpRequestMessage> BuildRequestAsync(HttpContext context, Sidekick.Topology.Backend backend, HttpMethod method)
    {
        var message = new HttpRequestMessage(method, backend.DestinationPrefix) { Version = HttpVersion.Version11 };
        await SidekickTransformer.Instance.TransformRequestAsync(context, message, backend.DestinationPrefix, context.RequestAborted);
        message.Method = method;
        message.Content = null;
        foreach (var name in Conditionals)
        {
            message.Headers.Remove(name);
        }

        return message;
    }

    /// <summary>Makes a request conditional on the stored validators (ETag first, else Last-Modified).</summary>
    private static void AddValidators(HttpRequestMessage message, CachedResponse entry)
    {
        if (entry.ETag is { } etag)
        {
            message.Headers.TryAddWithoutValidation(HeaderNames.IfNoneMatch, etag);
        }
        else if (entry.Header(HeaderNames.LastModified) is { } lastModified)
        {
            message.Headers.TryAddWithoutValidation(HeaderNames.IfModifiedSince, lastModified);
        }
    }

    /// <summary>
    /// Sends to the backend, counted as in flight (the caller ends it); null after a transport failure, which is
    /// reported to passive health.
    /// </summary>
    private static async Task<HttpResponseMessage?> SendAsync(ICacheOrigin origin, Sidekick.Topology.Site site, Sidekick.Topology.Backend backend, HttpRequestMessage message, CancellationToken cancellationToken)
    {
        backend.BeginRequest();
        try
        {
            return await site.Invoker.SendAsync(message, cancellationToken);
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException && !cancellationToken.IsCancellationRequested)
        {
            origin.ReportTransportFailure(backend, TransportErrors.Describe(ex));
            backend.EndRequest();
            return null;
        }
    }

    private static List<KeyValuePair<string, string>> Collect(HttpResponseMessage response)
    {
        var headers = new List<KeyValuePair<string, string>>();
        foreach (var (name, values) in response.Headers)
        {
            headers.Add(new(name, string.Join(", ", values)));
        }

        foreach (var (name, values) in response.Content.Headers)
        {
            headers.Add(new(name, string.Join(", ", values)));
        }

        return headers;
    }

    private static string? Header(List<KeyValuePair<string, string>> headers, string name) =>
        headers.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;

    /// <summary>What a background revalidation needs from the request, copied before the request ends.</summary>
    private sealed record RevalidationSnapshot(string Host, string RawTarget, KeyValuePair<string, StringValues>[] Headers)
    {
        public static RevalidationSnapshot From(HttpContext context) =>
            new(context.Request.Host.Value ?? "",
                context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()?.RawTarget ?? context.Request.Path.Value ?? "/",
                context.Request.Headers.Where(h => !Conditionals.Contains(h.Key, StringComparer.OrdinalIgnoreCase)).ToArray());

        public HttpRequestMessage ToRequest(string prefix, CachedResponse entry)
        {
            var message = new HttpRequestMessage(HttpMethod.Get, new Uri(prefix + RawTarget, new UriCreationOptions { DangerousDisablePathAndQueryCanonicalization = true }));
            var named = HopByHopHeaders.NamedIn(Headers.FirstOrDefault(h => string.Equals(h.Key, HeaderNames.Connection, StringComparison.OrdinalIgnoreCase)).Value);
            foreach (var (name, values) in Headers)
            {
                // The same hop-by-hop rule as the forwarding paths: no connection-level field, none Connection named.
                if (!string.Equals(name, HeaderNames.Host, StringComparison.OrdinalIgnoreCase) && !HopByHopHeaders.Contains(name) &&
                    !HopByHopHeaders.IsNamed(named, name) && !string.Equals(name, HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase))
                {
                    message.Headers.TryAddWithoutValidation(name, (IEnumerable<string?>)values);
                }
            }

            message.Headers.Host = Host;
            AddValidators(message, entry);
            return message;
        }
    }
}
