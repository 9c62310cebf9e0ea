using System.Net;
using Sidekick.Networking;
using Sidekick.Topology;

namespace Sidekick.Health;

/// <summary>
/// Runs one probe loop per backend: an immediate probe, then one every interval plus a uniform jitter in
/// [0, interval) so that many sidecars do not probe a cluster in lockstep. Only an exact 200 is healthy.
/// A backend that is down is probed again soon and then less often (100 ms, doubling up to the interval),
/// as HAProxy's fastinter/downinter and Envoy's unhealthy interval do: a backend that starts a moment after
/// its sidecar, or restarts, is back in rotation within a fraction of a second instead of an interval.
/// A passive mark-down, and a request waiting for a backend, wake a down backend's loop at once.
/// In optimistic mode a loop ends once its backend is up and is restarted by passive failure detection.
/// </summary>
internal sealed class HealthProber : IDisposable
{
    /// <summary>The first re-probe of a down backend; each further one waits twice as long, up to the interval.</summary>
    public static readonly TimeSpan FastInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>Wake-ups never probe one backend more often than this (requests waiting keep waking it).</summary>
    public static readonly TimeSpan MinimumGap = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Broken responses in a row (different requests) that mark a backend down: Envoy's default for
    /// consecutive gateway failures. A backend that breaks every answer is out after five requests (each
    /// retried elsewhere when safe); a few broken URLs among working traffic never get there.
    /// </summary>
    public const int BrokenResponsesToMarkDown = 5;

    private readonly HealthProberOptions _options;
    private readonly TopologyStore _topology;
    private readonly TimeProvider _time;
    private readonly LocalShortage? _shortage;
    private readonly Random _random;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _loopsGate = new();
    private readonly Dictionary<Backend, ProbeWakeup> _running = [];

    public HealthProber(HealthProberOptions options, TopologyStore topology, TimeProvider time, Random random, LocalShortage? shortage = null)
    {
        _shortage = shortage;
        _options = options;
        _topology = topology;
        _time = time;
        _random = random;
        _topology.Changed += OnTopologyChanged;
    }

    /// <summary>Raised after each probe, with its result (for traces, metrics and the state endpoint).</summary>
    public event Action<Backend, ProbeResult>? ProbeCompleted;

    /// <summary>Starts loops for every backend of the current topology.</summary>
    public void Start() => OnTopologyChanged(TopologySnapshot.Empty, _topology.Current);

    /// <summary>
    /// Passive detection: a proxied request hit a transport error. The backend goes down at once; only a
    /// good probe brings it back.
    /// </summary>
    public void ReportTransportFailure(Backend backend, string reason)
    {
        if (!backend.MarkDown(reason))
        {
            return;
        }

        // Probe at once: a backend that fails requests but passes its probe is back in a moment (and the
        // panic rule uses it meanwhile); one that fails its probe too stays out.
        if (_options.Optimistic)
        {
            StartLoop(backend, probeImmediately: true);
        }

        Wake(backend);
    }

    /// <summary>
    /// A head that cannot be parsed, a body cut short, a connection closed or silent mid-exchange: that says
    /// something about one URL (a broken object, a handler that crashes) as often as about the backend, so
    /// only a run of <see cref="BrokenResponsesToMarkDown"/> of them, from different requests with no
    /// complete response between, marks the backend down.
    /// </summary>
    public void ReportBrokenResponse(Backend backend, string requestId, string reason)
    {
        var run = backend.RecordBrokenResponse(requestId);
        if (run >= BrokenResponsesToMarkDown)
        {
            ReportTransportFailure(backend, $"{reason} ({run} broken responses in a row)");
        }
    }

    /// <summary>
    /// A request is waiting because nothing serves: probe every down backend now (each at most once per
    /// <see cref="MinimumGap"/>), so the first that comes back is found at once.
    /// </summary>
    public void ProbeDownBackendsNow()
    {
        lock (_loopsGate)
        {
            foreach (var (backend, wakeup) in _running)
            {
                if (!backend.IsUp)
                {
                    wakeup.Set();
                }
            }
        }
    }

    private void Wake(Backend backend)
    {
        lock (_loopsGate)
        {
            if (_running.TryGetValue(backend, out var wakeup))
            {
                wakeup.Set();
            }
        }
    }

    /// <summary>Probes once and applies the outcome to the backend's state.</summary>
    public async Task<ProbeResult> ProbeAsync(Backend backend, HttpMessageInvoker invoker, CancellationToken cancellationToken)
    {
        var started = _time.GetUtcNow();
        var startTimestamp = _time.GetTimestamp();
        ProbeResult result;
        var failure = ProbeFailureKind.Other;
        using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            timeout.CancelAfter(_options.Timeout);
            try
            {
                var status = await FollowAsync(backend.Definition, invoker, timeout.Token);
                var healthy = status == 200;
                result = new ProbeResult(started, healthy, status, _time.GetElapsedTime(startTimestamp),
                    healthy ? null : $"response status {status}");
                failure = ProbeFailureKind.Status;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                result = new ProbeResult(started, false, null, _time.GetElapsedTime(startTimestamp),
                    $"probe {backend.Definition.ProbeUri} timed out after {_options.Timeout.TotalSeconds:0.###}s");
                failure = ProbeFailureKind.Timeout;
            }
            catch (Exception ex) when (LocalShortage.Find(ex, out var local))
            {
                // No socket could be had for the probe: nothing is learnt about the backend, whose state stays.
                _shortage?.Record(ShortageSite.Probe, local);
                var unsent = new ProbeResult(started, false, null, _time.GetElapsedTime(startTimestamp),
                    $"probe {backend.Definition.ProbeUri} not sent: sidekick is {LocalShortage.Describe(local)}; the backend keeps its state");
                ProbeCompleted?.Invoke(backend, unsent);
                return unsent;
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // Any failure is a failed probe (HttpRequestException and IOException are the usual ones; a request the
                // client refuses to send throws others): an exception out of here would end the backend's probe loop,
                // and with it the only way back up for a backend that is down.
                result = new ProbeResult(started, false, null, _time.GetElapsedTime(startTimestamp),
                    $"probe {backend.Definition.ProbeUri} failed: {TransportErrors.Describe(ex)}");
                failure = TransportErrors.Classify(ex);
            }
        }

        backend.RecordProbe(result);
        // Probes are counted apart from proxied requests (upstream counted them as calls: a backend that
        // served one request showed seven).
        if (result.Healthy)
        {
            backend.Stats.RecordHealthyProbe();
            backend.MarkUp();
        }
        else
        {
            backend.Stats.RecordHealthError(failure);
            backend.MarkDown(result.Error!);
        }

        ProbeCompleted?.Invoke(backend, result);
        return result;
    }

    /// <summary>
    /// The redirect answer that fails a probe, as with Go's client (upstream's probes): it sends at most this many
    /// requests, so it follows one redirect fewer, and fails with "stopped after 10 redirects" when the last is one.
    /// </summary>
    internal const int MaxRedirects = 10;

    /// <summary>
    /// One probe's GET and the redirects it is answered with (301, 302, 303, 307, 308 with a Location, up to
    /// <see cref="MaxRedirects"/>, all within the probe's timeout, as upstream's Go client follows them); the final
    /// status. Each body is drained inside the timeout, so a stalled probe endpoint counts as a failure. The
    /// endpoint's user information goes as Basic credentials, as Go's client sends it for a URL with a user, and only
    /// to the endpoint's own scheme, host and port: a redirect elsewhere does not get them.
    /// </summary>
    private static async Task<int> FollowAsync(BackendDefinition definition, HttpMessageInvoker invoker, CancellationToken cancellationToken)
    {
        var target = definition.ProbeUri;
        for (var sent = 1; ; sent++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, target)
            {
                Version = HttpVersion.Version11,
                VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
            };
            if (definition.ProbeCredentials is { } credentials &&
                Uri.Compare(target, definition.ProbeUri, UriComponents.SchemeAndServer, UriFormat.SafeUnescaped, StringComparison.OrdinalIgnoreCase) == 0)
            {
                request.Headers.TryAddWithoutValidation("Authorization", credentials.HeaderValue);
            }

            using var response = await invoker.SendAsync(request, cancellationToken);
            await response.Content.CopyToAsync(Stream.Null, cancellationToken);
            var status = (int)response.StatusCode;
            if (status is not (301 or 302 or 303 or 307 or 308) || response.Headers.Location is not { } location)
            {
                return status;
            }

            if (sent == MaxRedirects)
            {
                throw new HttpRequestException($"stopped after {MaxRedirects} redirects");
            }

            // A Location the header parser took as a relative reference can still fail to combine with the target
            // ("//", "//h:-1/"): a failed probe, not an exception out of the probe loop.
            if (!location.IsAbsoluteUri && !Uri.TryCreate(target, location, out location))
            {
                throw new HttpRequestException($"redirected to an invalid Location ({response.Headers.Location})");
            }

            target = location;
            if (target.Scheme != Uri.UriSchemeHttp && target.Scheme != Uri.UriSchemeHttps)
            {
                throw new HttpRequestException($"redirected to {target.Scheme}: URL, which is not HTTP");
            }
        }
    }

    public void Dispose()
    {
        _topology.Changed -= OnTopologyChanged;
        _stopping.Cancel();
        _stopping.Dispose();
    }

    private void OnTopologyChanged(TopologySnapshot previous, TopologySnapshot next)
    {
        var kept = new HashSet<Backend>(next.AllBackends);
        foreach (var backend in previous.AllBackends)
        {
            if (!kept.Contains(backend))
            {
                backend.Retire();
            }
        }

        foreach (var backend in kept)
        {
            StartLoop(backend, probeImmediately: true);
        }
    }

    private void StartLoop(Backend backend, bool probeImmediately)
    {
        var wakeup = new ProbeWakeup();
        lock (_loopsGate)
        {
            if (_stopping.IsCancellationRequested || backend.Lifetime.IsCancellationRequested || !_running.TryAdd(backend, wakeup))
            {
                return;
            }
        }

        // On the thread pool, never on the caller's synchronization context: a host (the tests' runner, an
        // embedding app) may run few threads on it, and a probe continuation waiting there can outlive the
        // probe's timeout and mark a healthy backend down.
        _ = Task.Run(() => RunLoopAsync(backend, wakeup, probeImmediately));
    }

    private async Task RunLoopAsync(Backend backend, ProbeWakeup wakeup, bool probeImmediately)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token, backend.Lifetime.Token);
        var token = linked.Token;
        try
        {
            var wait = !probeImmediately;
            var firstWait = true;
            var downProbes = 0;
            var lastProbe = 0L;
            while (!token.IsCancellationRequested)
            {
                if (wait)
                {
                    var woken = await WaitAsync(wakeup, NextDelay(firstWait, backend.IsUp ? 0 : downProbes), token);
                    firstWait = false;
                    if (woken && _time.GetElapsedTime(lastProbe) is var since && since < MinimumGap)
                    {
                        await Task.Delay(MinimumGap - since, _time, token);
                    }
                }

                var invoker = FindInvoker(backend);
                if (invoker is null)
                {
                    return; // The backend left the topology between ticks.
                }

                wakeup.Reset();
                lastProbe = _time.GetTimestamp();
                var result = await ProbeAsync(backend, invoker, token);
                downProbes = result.Healthy ? 0 : downProbes + 1;
                wait = true;
                if (result.Healthy && _options.Optimistic)
                {
                    return;
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
        }
        finally
        {
            lock (_loopsGate)
            {
                _running.Remove(backend);
            }

            // A passive failure may have raced with the loop's exit in optimistic mode.
            if (_options.Optimistic && !backend.IsUp && !token.IsCancellationRequested)
            {
                StartLoop(backend, probeImmediately: false);
            }
        }
    }

    /// <summary>Waits for the delay or a wake-up, whichever comes first; true when woken.</summary>
    private async Task<bool> WaitAsync(ProbeWakeup wakeup, TimeSpan delay, CancellationToken token)
    {
        using var cut = CancellationTokenSource.CreateLinkedTokenSource(token);
        var woken = wakeup.Signaled;
        var elapsed = Task.Delay(delay, _time, cut.Token);
        var first = await Task.WhenAny(elapsed, woken);
        await cut.CancelAsync();
        token.ThrowIfCancellationRequested();
        return first == woken;
    }

    /// <summary>
    /// After <paramref name="downProbes"/> probes in a row found the backend down: 100 ms, then twice as long
    /// each time while that stays below the interval. Otherwise upstream's schedule: a loop's first wait
    /// (after its immediate probe) is exactly the interval; later ones add jitter.
    /// </summary>
    internal TimeSpan NextDelay(bool first, int downProbes)
    {
        var interval = _options.Interval;
        if (downProbes > 0 && downProbes < 31)
        {
            var fast = FastInterval * (1L << (downProbes - 1));
            if (fast < interval)
            {
                return fast;
            }
        }

        if (first)
        {
            return interval;
        }

        double jitter;
        lock (_random)
        {
            jitter = _random.NextDouble();
        }

        return interval + TimeSpan.FromTicks((long)(interval.Ticks * jitter));
    }

    private HttpMessageInvoker? FindInvoker(Backend backend)
    {
        foreach (var site in _topology.Current.Sites)
        {
            foreach (var candidate in site.Backends)
            {
                if (ReferenceEquals(candidate, backend))
                {
                    return site.Invoker;
                }
            }
        }

        return null;
    }
}

/// <summary>A probe loop's wake-up call: set by passive failures and waiting requests, reset by each probe.</summary>
internal sealed class ProbeWakeup
{
    private TaskCompletionSource _signal = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task Signaled => Volatile.Read(ref _signal).Task;

    public void Set() => Volatile.Read(ref _signal).TrySetResult();

    /// <summary>A probe is starting: what asked for it is answered by this probe.</summary>
    public void Reset()
    {
        var current = Volatile.Read(ref _signal);
        if (current.Task.IsCompleted)
        {
            Interlocked.CompareExchange(ref _signal, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), current);
        }
    }
}

internal sealed record HealthProberOptions(TimeSpan Interval, TimeSpan Timeout, bool Optimistic);
