using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using Microsoft.AspNetCore.Http.Features;
using Sidekick.Cli;
using Sidekick.Health;
using Sidekick.Networking;
using Sidekick.Routing;
using Sidekick.Topology;

namespace Sidekick.Forwarding;

/// <summary>
/// Watches one GET so that, when its backend dies mid-body, the rest can be fetched from another backend
/// with <c>Range: bytes=N-</c> and <c>If-Match: ETag</c> and appended to the client's stream. It reads the
/// body bytes sent from the exchange meter and holds back the forwarder's abort of the client connection until a resume has been
/// tried. The rest is spliced on only when the 206 proves it is the same version: the same strong ETag and,
/// when the first response had one, the same Last-Modified (a backend may ignore If-Match), in the same
/// Content-Encoding, for exactly the bytes missing. Otherwise, or when the object changed (412), no backend
/// can continue or one stays silent past the backend timeout, the client connection is aborted.
/// </summary>
internal sealed class DownloadResume : IHttpRequestLifetimeFeature
{
    private readonly ExchangeMeter _meter;
    private HttpContext _context = null!;
    private bool _abortRequested;
    private TimeProvider _time = TimeProvider.System;
    private TimeSpan _backendTimeout;

    private DownloadResume(ExchangeMeter meter) => _meter = meter;

    public CancellationToken RequestAborted
    {
        get => Server?.RequestAborted ?? CancellationToken.None;
        set
        {
            if (Server is { } server)
            {
                server.RequestAborted = value;
            }
        }
    }

    /// <summary>
    /// The server's own lifetime feature, which the meter takes when it puts this watch in front of it. Only a
    /// forwarder writing through the HttpContext (YARP) reaches the watch as a feature, and only once it is installed,
    /// so the plain path never looks the feature up (~160 instructions a lookup, every request).
    /// </summary>
    private IHttpRequestLifetimeFeature? Server => _meter.ServerLifetime;

    /// <summary>Why the last resume of this exchange did not complete (for the trace), or null.</summary>
    public string? Failure { get; private set; }

    /// <summary>Body bytes sent to the client so far.</summary>
    public long BytesSent => _meter.ResponseBodyBytes;

    /// <summary>
    /// Starts watching a plain GET (no client Range, no request body); null for every other request. The watch
    /// is kept with the exchange's meter, which is kept per connection, so watching allocates nothing after the
    /// first time. <paramref name="backendTimeout"/> (--backend-timeout, 0 = no limit) bounds each silence of a
    /// resuming backend, on <paramref name="time"/>'s clock.
    /// </summary>
    public static DownloadResume? Watch(HttpContext context, ExchangeMeter meter, TimeProvider time, TimeSpan backendTimeout)
    {
        var request = context.Request;
        if (!HttpMethods.IsGet(request.Method) || request.Headers.Range.Count > 0 || HasBody(request))
        {
            return null;
        }

        var watch = meter.KeptResume ??= new DownloadResume(meter);
        watch._context = context;
        watch._abortRequested = false;
        watch._time = time;
        watch._backendTimeout = backendTimeout;
        watch.Failure = null;
        // In front of the server's lifetime feature whenever the meter is (a forwarder writing through the
        // HttpContext, such as YARP, aborts the client through it).
        meter.InstallWith(watch);
        return watch;
    }

    /// <summary>
    /// A GET that carries a body: the resume's Range request is sent without it, so it could be answered for
    /// another request than the client's. HTTP/1.x frames a body only by Content-Length or Transfer-Encoding;
    /// HTTP/2 by the stream, which only the server's body detection knows (asked only then: a feature lookup
    /// costs ~160 instructions).
    /// </summary>
    private static bool HasBody(HttpRequest request) =>
        request.ContentLength switch
        {
            > 0 => true,
            0 => false,
            null => request.Headers.TransferEncoding.Count > 0 ||
                    (!HttpProtocol.IsHttp11(request.Protocol) && !HttpProtocol.IsHttp10(request.Protocol) &&
                     request.HttpContext.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody == true),
            _ => true,
        };

    /// <summary>Deferred: the forwarder asks to abort; we decide after trying to resume.</summary>
    public void Abort() => _abortRequested = true;

    /// <summary>Aborts the client connection for real if the forwarder asked for it.</summary>
    public void CompleteAbort()
    {
        if (_abortRequested)
        {
            Server?.Abort();
        }
    }

    /// <summary>
    /// Whether the response can be continued elsewhere: a 200 with a strong ETag and a known length, cut short.
    /// </summary>
    public bool TryGetResumePoint(out string etag, out long length)
    {
        var response = _context.Response;
        etag = response.Headers.ETag.ToString();
        length = response.ContentLength ?? -1;
        return response.StatusCode == StatusCodes.Status200OK && etag.Length > 2 && etag[0] == '"' &&
               length > 0 && BytesSent < length && !_context.RequestAborted.IsCancellationRequested;
    }

    /// <summary>
    /// Fetches the remaining bytes from other backends until the body is complete. Returns false when the
    /// response cannot be completed (no backend, object changed, attempts exhausted).
    /// </summary>
    /// <param name="failed">The backend whose body broke: the resume keeps off it, and off each backend it breaks on
    /// itself (the least-loaded pick chose the same broken one on every attempt while another waited).</param>
    /// <param name="siteAvoiding">The first site with a serving backend not among those given.</param>
    public async Task<bool> ResumeAsync(
        Backend failed, Func<List<Backend>, Site?> siteAvoiding, IBalancer balancer, HealthProber health, int maxAttempts, ResumeCounters counters,
        LocalShortage? shortage = null)
    {
        if (!TryGetResumePoint(out var etag, out var length))
        {
            return false;
        }

        List<Backend> avoided = [failed];
        var outcome = await ContinueAsync(() => siteAvoiding(avoided), new AvoidingBalancer(balancer, avoided), avoided, health, maxAttempts, etag, length, shortage);
        counters.Add(outcome);
        return outcome == ResumeOutcome.Completed;
    }

    private async Task<ResumeOutcome> ContinueAsync(
        Func<Site?> selectSite, AvoidingBalancer balancer, List<Backend> avoided, HealthProber health, int maxAttempts, string etag, long length, LocalShortage? shortage)
    {
        var headers = _context.Response.Headers;
        var first = new Representation(etag, headers.LastModified.ToString(), ContentCoding(headers.ContentEncoding.ToString()));
        var aborted = _context.RequestAborted;

        // --backend-timeout, as for the first backend: the longest a resuming backend may stay silent, before
        // its response head and between body reads (never while the client is being written to: a slow reader
        // is the client send timeout's business). On the server's clock, so tests can move it.
        using var silence = new CancellationTokenSource(Timeout.InfiniteTimeSpan, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(aborted, silence.Token);
        var token = linked.Token;

        // The rest goes through the HttpContext: counted by the meter, aborts deferred to this watch.
        _meter.Install();
        var buffer = new byte[64 * 1024];
        for (var attempt = 0; attempt < maxAttempts && BytesSent < length; attempt++)
        {
            var site = selectSite();
            var backend = site is null ? null : balancer.Pick(site.Backends);
            if (site is null || backend is null)
            {
                // After attempts, every backend left has broken the body: those were the resume's failures.
                return attempt == 0
                    ? Fail(ResumeOutcome.NoBackend, "resume: no backend left to continue from")
                    : Fail(ResumeOutcome.Failed, $"resume: no backend completed the body ({attempt} broke it)");
            }

            backend.BeginRequest();
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, backend.DestinationPrefix) { Version = HttpVersion.Version11 };
                await SidekickTransformer.Instance.TransformRequestAsync(_context, request, backend.DestinationPrefix, aborted);
                var from = BytesSent;
                request.Headers.Range = new RangeHeaderValue(from, length - 1);
                // The client's own conditionals stay as it sent them: they let the first response's version through,
                // so they let it through again (and a 304 or 412 is refused below), and a SigV4 client signs every
                // field it sends, so a removed or replaced one voids the signature. If-Match is added where the client
                // sent none; the 206's ETag is checked against the first response's whatever the backend made of it.
                if (!request.Headers.Contains("If-Match"))
                {
                    request.Headers.TryAddWithoutValidation("If-Match", etag);
                }

                Listen(silence);
                using var response = await site.Invoker.SendAsync(request, token);
                Listen(silence, stop: true);
                if (response.StatusCode != HttpStatusCode.PartialContent || !ContinuesAt(response, from, length))
                {
                    // 412: the object changed; never stitch two versions together.
                    var range = response.Content.Headers.ContentRange;
                    return Fail(ResumeOutcome.Refused,
                        $"resume refused by {backend.Name}: {(int)response.StatusCode} {range} (length {response.Content.Headers.ContentLength?.ToString(CultureInfo.InvariantCulture) ?? "unknown"})");
                }

                if (Differs(response, first) is { } mismatch)
                {
                    // The backend ignored If-Match and sent another version's bytes, or another coding of them.
                    return Fail(ResumeOutcome.ValidatorMismatch, $"resume refused: {backend.Name} answered with {mismatch}");
                }

                // Never more than the range proved: the client's Content-Length is already out, and Kestrel
                // refuses a byte beyond it.
                var missing = length - from;
                await using var source = await response.Content.ReadAsStreamAsync(token);
                while (missing > 0)
                {
                    Listen(silence);
                    var read = await source.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, missing)), token);
                    Listen(silence, stop: true);
                    if (read == 0)
                    {
                        // A body without a length that ended short: broken, like one that announced its length.
                        health.ReportBrokenResponse(backend, _context.TraceIdentifier, "the resumed body ended early");
                        avoided.Add(backend);
                        break;
                    }

                    // Through the response body (the meter's stream), so the bytes are counted.
                    await _context.Response.Body.WriteAsync(buffer.AsMemory(0, read), aborted);
                    missing -= read;
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or HttpRequestException or IOException &&
                                       silence.IsCancellationRequested && !aborted.IsCancellationRequested)
            {
                // The client has waited a whole backend timeout already: cut its response rather than make it
                // wait as long again on the next backend.
                var silent = $"silent for {GoDuration.Format(_backendTimeout)} (--backend-timeout)";
                health.ReportBrokenResponse(backend, _context.TraceIdentifier, silent);
                return Fail(ResumeOutcome.Failed, $"resume: {backend.Name} was {silent}");
            }
            catch (Exception ex) when (LocalShortage.Find(ex, out var local) && !aborted.IsCancellationRequested)
            {
                // No socket for the next backend (out of descriptors): nothing learnt about it, and every other would
                // fail the same way, so the client's response is cut without marking any backend down.
                shortage?.Record(ShortageSite.Backend, local);
                return Fail(ResumeOutcome.Failed, $"resume: sidekick is {LocalShortage.Describe(local)}");
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException && !aborted.IsCancellationRequested)
            {
                // As for the first backend: only a backend that cannot be reached is down at once; a response
                // ended early or invalid is a broken one, which needs a run to mark the backend down.
                if (IsConnectFailure(ex))
                {
                    health.ReportTransportFailure(backend, TransportErrors.Describe(ex));
                }
                else
                {
                    health.ReportBrokenResponse(backend, _context.TraceIdentifier, TransportErrors.Describe(ex));
                }

                avoided.Add(backend);
            }
            catch (OperationCanceledException)
            {
                return Fail(ResumeOutcome.Failed, "resume: the client went away");
            }
            catch (InvalidOperationException ex)
            {
                // Kestrel refusing a write past the client's Content-Length: the client's response is cut, and
                // the trace says why.
                return Fail(ResumeOutcome.Failed, $"resume: {ex.Message}");
            }
            finally
            {
                Listen(silence, stop: true);
                backend.EndRequest();
            }
        }

        return BytesSent == length ? ResumeOutcome.Completed : Fail(ResumeOutcome.Failed, $"resume: no backend completed the body in {maxAttempts} attempts");
    }

    /// <summary>Starts (or stops) the silence clock; with no --backend-timeout it never runs.</summary>
    private void Listen(CancellationTokenSource silence, bool stop = false)
    {
        if (_backendTimeout > TimeSpan.Zero)
        {
            silence.CancelAfter(stop ? Timeout.InfiniteTimeSpan : _backendTimeout);
        }
    }

    /// <summary>
    /// The backend could not be reached at all (refused, unreachable, name or TLS failure), as BackendExchange
    /// tells it: anything after the connection was made counts as a broken response.
    /// </summary>
    private static bool IsConnectFailure(Exception exception) => exception is HttpRequestException
    {
        HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or HttpRequestError.SecureConnectionError,
    };

    /// <summary>
    /// Whether the 206 holds exactly the bytes missing: <c>bytes from-(length-1)/length</c> and, when it says
    /// its length, <c>length - from</c> of them.
    /// </summary>
    private static bool ContinuesAt(HttpResponseMessage partial, long from, long length)
    {
        var headers = partial.Content.Headers;
        return headers.ContentRange is { HasRange: true, HasLength: true } range &&
               string.Equals(range.Unit, "bytes", StringComparison.OrdinalIgnoreCase) &&
               range.From == from && range.To == length - 1 && range.Length == length &&
               (headers.ContentLength is not { } announced || announced == length - from);
    }

    /// <summary>The content coding as compared: none is <c>identity</c>.</summary>
    private static string ContentCoding(string value) => value.Trim() is { Length: > 0 } coding ? coding : "identity";

    /// <summary>
    /// Null when the 206 carries the first response's strong ETag (byte for byte), its Last-Modified if it had
    /// one, and its Content-Encoding (gzip bytes spliced onto identity ones are garbage); else what differed.
    /// </summary>
    private static string? Differs(HttpResponseMessage partial, Representation first)
    {
        var partialEtag = partial.Headers.TryGetValues("ETag", out var etags) ? string.Join(", ", etags) : "";
        if (!string.Equals(partialEtag, first.ETag, StringComparison.Ordinal))
        {
            return $"ETag {(partialEtag.Length == 0 ? "(none)" : partialEtag)} instead of {first.ETag}";
        }

        var partialCoding = ContentCoding(partial.Content.Headers.TryGetValues("Content-Encoding", out var codings) ? string.Join(", ", codings) : "");
        if (!string.Equals(partialCoding, first.ContentCoding, StringComparison.OrdinalIgnoreCase))
        {
            return $"Content-Encoding {partialCoding} instead of {first.ContentCoding}";
        }

        var lastModified = first.LastModified;
        if (lastModified.Length == 0)
        {
            return null;
        }

        var partialModified = partial.Content.Headers.TryGetValues("Last-Modified", out var dates) ? string.Join(", ", dates) : "";
        return string.Equals(partialModified, lastModified, StringComparison.Ordinal) ||
               (DateTimeOffset.TryParse(partialModified, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var a) &&
                DateTimeOffset.TryParse(lastModified, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var b) && a == b)
            ? null
            : $"Last-Modified {(partialModified.Length == 0 ? "(none)" : partialModified)} instead of {lastModified}";
    }

    private ResumeOutcome Fail(ResumeOutcome outcome, string why)
    {
        Failure = why;
        return outcome;
    }

    /// <summary>What a 206 must repeat of the first response to be spliced onto it.</summary>
    private readonly record struct Representation(string ETag, string LastModified, string ContentCoding);
}
