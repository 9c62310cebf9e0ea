using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;
using Sidekick.Caching;
using Sidekick.Forwarding.Http1;
using Sidekick.Health;
using Sidekick.Networking;
using Sidekick.Observability;
using Sidekick.Routing;
using Sidekick.Topology;
using Yarp.ReverseProxy.Forwarder;

namespace Sidekick.Forwarding;

/// <summary>
/// The one backend exchange layer: every request to a backend goes through <see cref="ForwardAsync"/>, the
/// client's own and the cache's (fills, revalidations, background revalidations, watched by an
/// <see cref="IExchangeObserver"/>). Per attempt it claims a backend (site selection, panic rule, waiting,
/// balancer, in-flight, slow start), lets <see cref="Http1Forwarder"/> choose the path and send under the one
/// header policy (<see cref="ForwardingHeaders"/>), accounts (statistics with bytes both ways, passive health,
/// outliers, retry budget, trace record) and releases. A request that provably never reached a backend's
/// application is retried on another backend; a GET cut mid-body is resumed elsewhere.
/// </summary>
internal sealed class BackendExchange(
    bool cacheOn,
    TopologyStore topology,
    IBalancer balancer,
    Http1Forwarder forwarder,
    HealthProber health,
    OutlierDetector outliers,
    RetryPolicy retries,
    long failbackHoldDownMilliseconds,
    TraceSink trace,
    TimeProvider time,
    PanicRule panic,
    BackendWait waits,
    TimeSpan backendTimeout,
    LocalShortage? shortage = null) : ICacheOrigin
{
    private readonly ForwarderRequestConfig RequestConfig = new()
    {
        Version = HttpVersion.Version11,
        VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        // --backend-timeout: the longest a backend may stay silent, before its response head and between body
        // reads (both paths cut an exchange with no progress for this long). Generous by default: slow backend
        // work on a huge object is legitimate, a backend that never answers is not. 0: the longest a timer takes.
        ActivityTimeout = backendTimeout > TimeSpan.Zero ? backendTimeout : TimeSpan.FromDays(24),
        AllowResponseBuffering = false,
    };

    /// <summary>
    /// Forwards to a backend, with retries and failover: every request to a backend, the cache's included
    /// (with an <paramref name="observer"/> that sees the response head and body, and may take the response over).
    /// </summary>
    public async Task ForwardAsync(HttpContext context, IExchangeObserver? observer = null)
    {
        retries.Budget.OnRequest();
        context.Response.Headers.Server = "SideKick";
        ReplayableBody? replayable;
        try
        {
            replayable = await ReplayableBody.CaptureAsync(context, retries.MaxReplayBytes, retries.ReplayBudget);
        }
        catch (IOException)
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            return;
        }

        using var _ = replayable;
        // The cache's outcome, set before forwarding: a failed attempt clears the response (as YARP does).
        var cacheOutcome = !cacheOn ? default : context.Response.Headers[ResponseCache.CacheHeader];
        using var meter = ExchangeMeter.Begin(context, trace.Enabled ? time : null, trace.WantsHeaders);
        if (observer is not null)
        {
            // The HTTP/1.1 path asks the meter; YARP's transformer finds it among the features.
            meter.Observer = observer;
            context.Features.Set(observer);
        }

        var resume = DownloadResume.Watch(context, meter, time, backendTimeout);
        var waited = false;
        List<Backend>? failedOn = null;
        for (var attempt = 1; ; attempt++)
        {
            // Re-read the topology on every attempt, and keep a retry off the backends this request failed on
            // (a broken response does not mark a backend down by itself): another backend of the site, then
            // the next site.
            var site = failedOn is null ? topology.Current.SelectSite(failbackHoldDownMilliseconds) : SiteAvoiding(failedOn);
            var backend = site is null ? null : Claim(site, failedOn);
            if (backend is not null)
            {
                panic.Serving();
            }
            else if (panic.Claim(topology.Current) is { } panicked)
            {
                (site, backend) = panicked;
            }
            else
            {
                // Nothing to go to: wait (once per request) for a backend rather than answer a 502 that a
                // moment's patience would have avoided.
                if (!waited && waits.Enabled)
                {
                    waited = true;
                    if (await waits.WaitAsync(HasBackend, context.RequestAborted))
                    {
                        attempt--;
                        continue;
                    }
                }

                if (observer?.OnNoAnswer(context) != true)
                {
                    await BackendErrorResponse.WriteAsync(context, BackendErrorResponse.AllOffline);
                }

                return;
            }

            // The attempt is written out here rather than awaited as its own method: one state machine per
            // request instead of two (each costs an allocation and a continuation hop).
            var started = time.GetTimestamp();
            FailedAttempt failed;
            string? noSocket = null; // what sidekick ran short of, when no socket could be had for the backend
            try
            {
                var error = await forwarder.SendAsync(context, meter, backend, site!.Invoker, RequestConfig);
                if (error == ForwarderError.None)
                {
                    backend.RecordCompleteResponse();
                    outliers.OnResponse(backend, context.Response.StatusCode);
                    return;
                }

                if (await LearnFromFailureAsync(context, backend, error, resume) is not { } attemptFailed)
                {
                    return;
                }

                failed = attemptFailed;
                noSocket = failed.Shortage is { } want ? LocalShortage.Describe(want) : null;
            }
            finally
            {
                backend.EndRequest();
                Account(context, backend, meter, started, noSocket is null ? resume?.Failure : "sidekick is " + noSocket, reachedBackend: noSocket is null);
            }

            if (noSocket is not null)
            {
                // sidekick's own shortage, not the backend's: another backend would meet it too.
                if (observer?.OnNoAnswer(context) != true)
                {
                    await BackendErrorResponse.WriteShortageAsync(context, noSocket);
                }

                return;
            }

            if (attempt < retries.MaxAttempts && CanRetry(context, failed, replayable is not null) && retries.Budget.TryWithdraw())
            {
                retries.Count.Add(1);
                (failedOn ??= []).Add(backend);
                replayable?.Rewind();
                ClearForRetry(context.Response, cacheOutcome);
                continue;
            }

            if (IsClientFault(failed.Error))
            {
                // The client sent a broken body (e.g. a bad chunk size): its fault, not the backend's.
                context.Response.StatusCode = StatusCodes.Status400BadRequest;
                return;
            }

            if (observer?.OnNoAnswer(context) != true)
            {
                var timedOut = failed.Error == ForwarderError.RequestTimedOut;
                await BackendErrorResponse.WriteAsync(context, TransportErrors.Summarize(failed.Exception, timedOut), timedOut);
            }

            return;
        }
    }

    /// <summary>
    /// Takes back what a failed attempt put on the response (its status, the backend's headers) and puts back
    /// what was there before any attempt: our Server marker and the cache's outcome.
    /// </summary>
    private static void ClearForRetry(HttpResponse response, StringValues cacheOutcome)
    {
        response.Clear();
        response.Headers.Server = "SideKick";
        if (cacheOutcome.Count > 0)
        {
            response.Headers[ResponseCache.CacheHeader] = cacheOutcome;
        }
    }

    /// <summary>
    /// Where a retry or a cut body goes: the first site with a serving backend other than those the request
    /// failed on, preferring one outside its failback hold-down (as <see cref="TopologySnapshot.SelectSite"/>
    /// does for first attempts), else wherever requests go.
    /// </summary>
    private Site? SiteAvoiding(List<Backend> failed) =>
        FirstSiteServingOtherThan(failed, failbackHoldDownMilliseconds)
        ?? (failbackHoldDownMilliseconds > 0 ? FirstSiteServingOtherThan(failed, 0) : null)
        ?? topology.Current.SelectSite(failbackHoldDownMilliseconds);

    private Site? FirstSiteServingOtherThan(List<Backend> failed, long holdDownMilliseconds)
    {
        foreach (var site in topology.Current.Sites)
        {
            foreach (var candidate in site.Backends)
            {
                if (candidate.IsServing && !failed.Contains(candidate) && !candidate.IsRecoveringWithin(holdDownMilliseconds))
                {
                    return site;
                }
            }
        }

        return null;
    }

    /// <summary>A waiting request may go on: a backend serves, or the panic rule has one.</summary>
    private bool HasBackend() =>
        topology.Current.SelectSite(failbackHoldDownMilliseconds) is not null || PanicRule.SelectSite(topology.Current) is not null;

    /// <summary>Picks a backend and counts the request in flight on it (the caller's attempt ends it).</summary>
    private Backend? Claim(Site site, List<Backend>? avoid)
    {
        var picker = avoid is null ? balancer : new AvoidingBalancer(balancer, avoid);
        for (var tries = 1; ; tries++)
        {
            var backend = picker.Pick(site.Backends);
            if (backend is null)
            {
                return null;
            }

            backend.BeginRequest();
            if (tries == 3 || !picker.ShouldRepick(site.Backends, backend))
            {
                return backend;
            }

            backend.EndRequest();
        }
    }

    /// <summary>
    /// After a failed send: reports a backend fault to passive health and, when the response has started,
    /// resumes the body elsewhere or aborts. Returns the failure to retry or answer, or null when the
    /// exchange is over (the client left, or the response could not be taken back).
    /// </summary>
    private async ValueTask<FailedAttempt?> LearnFromFailureAsync(HttpContext context, Backend backend, ForwarderError error, DownloadResume? resume)
    {
        var exception = context.Features.Get<IForwarderErrorFeature>()?.Exception;
        var clientGone = context.RequestAborted.IsCancellationRequested;
        var reason = exception is null ? error.ToString() : TransportErrors.Describe(exception);
        if (!clientGone && !context.Response.HasStarted && LocalShortage.Find(exception, out var local))
        {
            // No socket could be had for the backend (EMFILE, ENOBUFS): nothing is learnt about the backend. The trace
            // shows the 503 the client gets, not the forwarder's 502.
            shortage?.Record(ShortageSite.Backend, local);
            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            return new FailedAttempt(error, exception, reason, local);
        }

        if (!clientGone && IsBackendFault(error))
        {
            if (IsConnectFailure(error, exception))
            {
                health.ReportTransportFailure(backend, reason);
            }
            else
            {
                health.ReportBrokenResponse(backend, context.TraceIdentifier, reason);
            }
        }

        if (context.Response.HasStarted)
        {
            // Headers are out: continue the body from another backend if the object allows it, else
            // abort — never a silently truncated 200.
            if (resume is null || !IsBackendFault(error) ||
                !await resume.ResumeAsync(backend, SiteAvoiding, balancer, health, retries.MaxAttempts, retries.Resumes, shortage))
            {
                context.Abort();
                resume?.CompleteAbort();
            }

            return null;
        }

        return clientGone ? null : new FailedAttempt(error, exception, reason);
    }

    /// <summary>The status recorded for a request whose client left before the answer began (nginx's convention).</summary>
    public const int ClientClosedRequest = 499;

    /// <summary>
    /// Statistics (unless the request never reached the backend: no socket could be had for it); a trace record only
    /// when something will print it.
    /// </summary>
    private void Account(HttpContext context, Backend backend, ExchangeMeter meter, long started, string? error, bool reachedBackend = true)
    {
        var latency = time.GetElapsedTime(started);
        // A client that left before the answer began is nginx's 499, not the 502 the forwarder set on the way out:
        // neither the backend's statistics nor the trace should show a gateway error nobody received.
        var status = context.RequestAborted.IsCancellationRequested && !context.Response.HasStarted
            ? ClientClosedRequest
            : context.Response.StatusCode;
        var rx = meter.RequestBodyBytes + meter.RequestHeaderBytesOf(context.Request);
        var tx = meter.ResponseBodyBytes + ExchangeMeter.ResponseHeaderBytes(context.Response);
        if (reachedBackend)
        {
            backend.Stats.RecordCall(status, latency, rx, tx);
            backend.Stats.RecordRequestDuration(latency);
        }

        if (!trace.Enabled)
        {
            return;
        }

        var request = context.Request;
        var firstByte = meter.FirstByteTimestamp;
        trace.Write(new TraceRecord
        {
            IsProbe = false,
            Host = backend.Name,
            Time = time.GetUtcNow().UtcDateTime,
            Client = meter.ClientOf(context),
            Rx = rx,
            Tx = tx,
            Latency = latency,
            TimeToFirstByte = firstByte == 0 ? TimeSpan.Zero : time.GetElapsedTime(started, firstByte),
            StatusCode = status,
            Method = request.Method,
            Path = request.Path.Value ?? "/",
            Query = request.QueryString.HasValue ? request.QueryString.Value![1..] : "",
            ProbeUrl = backend.Definition.ProbeUri.ToString(),
            RequestHeaders = trace.WantsHeaders ? TraceSink.Capture(request.Headers) : null,
            ResponseHeaders = trace.WantsHeaders ? TraceSink.Capture(context.Response.Headers) : null,
            ResponseBody = meter.CapturedErrorBody,
            Cache = cacheOn && context.Response.Headers[ResponseCache.CacheHeader] is [var outcome] ? outcome : null,
            Error = error,
            Forwarder = meter.Path,
        });
    }

    /// <summary>
    /// A retry is safe when the connection was never made, or when the request is idempotent and its body
    /// (if any) was buffered for replay, and no response byte was sent. A protocol upgrade (a WebSocket handshake)
    /// is such a GET until its backend answers: one that failed before any answer is retried like any other.
    /// </summary>
    private static bool CanRetry(HttpContext context, FailedAttempt failed, bool bodyBuffered)
    {
        if (failed.Error is not (ForwarderError.Request or ForwarderError.RequestBodyDestination))
        {
            return false;
        }

        var hasBody = context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? true;
        if (bodyBuffered || (!hasBody && IdempotentMethods.Contains(context.Request.Method)))
        {
            return true;
        }

        return failed.Error == ForwarderError.Request && failed.Exception is HttpRequestException
        {
            HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or HttpRequestError.SecureConnectionError,
        };
    }

    /// <summary>Errors that say the backend (not the client) failed at the transport level.</summary>
    private static bool IsBackendFault(ForwarderError error) => error is
        ForwarderError.Request or
        ForwarderError.RequestTimedOut or
        ForwarderError.RequestBodyDestination or
        ForwarderError.ResponseBodyDestination or
        ForwarderError.UpgradeRequestDestination or
        ForwarderError.UpgradeResponseDestination;

    /// <summary>
    /// The backend could not be reached at all (refused, unreachable, name or TLS failure): that is the
    /// backend, and marks it down at once. Anything after the connection was made counts as a broken response.
    /// </summary>
    private static bool IsConnectFailure(ForwarderError error, Exception? exception) =>
        error == ForwarderError.Request && exception is HttpRequestException
        {
            HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or HttpRequestError.SecureConnectionError,
        };

    private static bool IsClientFault(ForwarderError error) => error is
        ForwarderError.RequestBodyClient or
        ForwarderError.UpgradeRequestClient;

    /// <param name="Shortage">Set when the attempt failed for want of a socket (<see cref="LocalShortage"/>).</param>
    private readonly record struct FailedAttempt(ForwarderError Error, Exception? Exception, string Reason, SocketError? Shortage = null);
}
