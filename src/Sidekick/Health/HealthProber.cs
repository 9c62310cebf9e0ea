using System.Net;
using Sidekick.Topology;

namespace Sidekick.Health;

/// <summary>
/// Runs one probe loop per backend: an immediate probe, then one every interval plus a uniform jitter in
/// [0, interval) so that many sidecars do not probe a cluster in lockstep. Only an exact 200 is healthy.
/// In optimistic mode a loop ends once its backend is up and is restarted by passive failure detection.
/// </summary>
internal sealed class HealthProber : IDisposable
{
    private readonly HealthProberOptions _options;
    private readonly TopologyStore _topology;
    private readonly TimeProvider _time;
    private readonly Random _random;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _loopsGate = new();
    private readonly HashSet<Backend> _running = [];

    public HealthProber(HealthProberOptions options, TopologyStore topology, TimeProvider time, Random random)
    {
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
        if (backend.MarkDown(reason) && _options.Optimistic)
        {
            StartLoop(backend, probeImmediately: false);
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
                using var request = new HttpRequestMessage(HttpMethod.Get, backend.Definition.ProbeUri)
                {
                    Version = HttpVersion.Version11,
                    VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
                };
                using var response = await invoker.SendAsync(request, timeout.Token);
                // Drain the body inside the timeout so a stalled probe endpoint counts as a failure.
                await response.Content.CopyToAsync(Stream.Null, timeout.Token);
                var status = (int)response.StatusCode;
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
            catch (Exception ex) when (ex is HttpRequestException or IOException)
            {
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
        lock (_loopsGate)
        {
            if (_stopping.IsCancellationRequested || backend.Lifetime.IsCancellationRequested || !_running.Add(backend))
            {
                return;
            }
        }

        // On the thread pool, never on the caller's synchronization context: a host (the tests' runner, an
        // embedding app) may run few threads on it, and a probe continuation waiting there can outlive the
        // probe's timeout and mark a healthy backend down.
        _ = Task.Run(() => RunLoopAsync(backend, probeImmediately));
    }

    private async Task RunLoopAsync(Backend backend, bool probeImmediately)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token, backend.Lifetime.Token);
        var token = linked.Token;
        try
        {
            var wait = !probeImmediately;
            var firstWait = true;
            while (!token.IsCancellationRequested)
            {
                if (wait)
                {
                    await Task.Delay(NextDelay(firstWait), _time, token);
                    firstWait = false;
                }

                var invoker = FindInvoker(backend);
                if (invoker is null)
                {
                    return; // The backend left the topology between ticks.
                }

                var result = await ProbeAsync(backend, invoker, token);
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

    /// <summary>
    /// A loop's first wait (after its immediate probe, or before the first probe of a loop restarted by a
    /// passive failure) is exactly the interval; later ones add jitter.
    /// </summary>
    private TimeSpan NextDelay(bool first)
    {
        var interval = _options.Interval;
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

internal sealed record HealthProberOptions(TimeSpan Interval, TimeSpan Timeout, bool Optimistic);
