namespace Sidekick.Topology;

/// <summary>
/// One backend server of a site and its runtime state. The request path reads <see cref="IsUp"/> and
/// updates the in-flight counter; the prober and passive detection flip the state. No locks are shared
/// between the two: the state is a single volatile field and transitions use compare-and-swap.
/// </summary>
internal sealed class Backend
{
    private const int Down = 0;
    private const int Up = 1;

    private readonly TimeProvider _time;
    private readonly object _transitionGate = new();
    private volatile int _state = Down;
    private int _inFlight;
    private long _lastFinishedTimestamp;
    private DateTimeOffset? _downSince;
    private DateTimeOffset? _upSince;
    private TimeSpan _lastDowntime;
    private TimeSpan _totalDowntime;
    private string? _lastDownReason;
    private ProbeResult? _lastProbe;
    private bool _reportedDown;

    public Backend(BackendDefinition definition, int siteNumber, TimeProvider time)
    {
        Definition = definition;
        SiteNumber = siteNumber;
        _time = time;
        _downSince = time.GetUtcNow();
        // The forwarder wants a prefix without a trailing slash; the client's raw target is appended.
        DestinationPrefix = definition.Endpoint.GetLeftPart(UriPartial.Authority);
    }

    public BackendDefinition Definition { get; }

    public int SiteNumber { get; }

    /// <summary>The endpoint as shown in logs, tables and metric labels, e.g. <c>http://minio1:9000</c>.</summary>
    public string Name => Definition.EndpointText;

    public string DestinationPrefix { get; }

    public BackendStats Stats { get; } = new();

    public bool IsUp => _state == Up;

    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Monotonic timestamp (<see cref="TimeProvider.GetTimestamp"/>) of the last finished request; 0 if none.</summary>
    public long LastFinishedTimestamp => Volatile.Read(ref _lastFinishedTimestamp);

    /// <summary>Cancelled when the backend leaves the topology; stops its probe loop.</summary>
    public CancellationTokenSource Lifetime { get; } = new();

    /// <summary>Raised after every up/down transition (never for a repeated state).</summary>
    public event Action<Backend, BackendTransition>? StateChanged;

    public BackendHealthSnapshot GetHealthSnapshot()
    {
        lock (_transitionGate)
        {
            var now = _time.GetUtcNow();
            var current = _downSince is { } since ? now - since : TimeSpan.Zero;
            return new BackendHealthSnapshot(
                IsUp,
                IsUp ? _upSince : _downSince,
                IsUp ? _lastDowntime : current,
                _totalDowntime + (IsUp ? TimeSpan.Zero : current),
                _lastDownReason,
                _lastProbe);
        }
    }

    public void BeginRequest() => Interlocked.Increment(ref _inFlight);

    public void EndRequest()
    {
        Interlocked.Decrement(ref _inFlight);
        Volatile.Write(ref _lastFinishedTimestamp, _time.GetTimestamp());
    }

    public void RecordProbe(ProbeResult result)
    {
        lock (_transitionGate)
        {
            _lastProbe = result;
        }
    }

    /// <summary>Marks the backend up; returns true when this call changed the state.</summary>
    public bool MarkUp()
    {
        BackendTransition transition;
        lock (_transitionGate)
        {
            if (_state == Up)
            {
                return false;
            }

            var now = _time.GetUtcNow();
            TimeSpan? downtime = null;
            if (_downSince is { } since)
            {
                _lastDowntime = now - since;
                _totalDowntime += _lastDowntime;
                downtime = _lastDowntime;
            }

            _downSince = null;
            _upSince = now;
            _reportedDown = false;
            _state = Up;
            transition = new BackendTransition(true, now, downtime, null);
        }

        StateChanged?.Invoke(this, transition);
        return true;
    }

    /// <summary>
    /// Marks the backend down with a reason. Returns true when this call changed the state from up.
    /// A backend that is down from the start is still reported once (event only), so operators see why.
    /// </summary>
    public bool MarkDown(string reason)
    {
        BackendTransition transition;
        var changed = true;
        lock (_transitionGate)
        {
            _lastDownReason = reason;
            if (_state == Down)
            {
                if (_reportedDown)
                {
                    return false;
                }

                _reportedDown = true;
                changed = false;
                transition = new BackendTransition(false, _time.GetUtcNow(), null, reason);
            }
            else
            {
                var now = _time.GetUtcNow();
                _downSince = now;
                _upSince = null;
                _reportedDown = true;
                _state = Down;
                transition = new BackendTransition(false, now, null, reason);
            }
        }

        StateChanged?.Invoke(this, transition);
        return changed;
    }

    /// <summary>Stops the probe loop; the object may still finish in-flight requests.</summary>
    public void Retire() => Lifetime.Cancel();
}

/// <summary>One up/down change. <paramref name="Downtime"/> is set when a backend comes back up.</summary>
internal readonly record struct BackendTransition(bool IsUp, DateTimeOffset At, TimeSpan? Downtime, string? Reason);

/// <summary>The result of the latest health probe.</summary>
internal sealed record ProbeResult(DateTimeOffset At, bool Healthy, int? StatusCode, TimeSpan Latency, string? Error);

/// <summary>A consistent read of a backend's health for tables and the state endpoint.</summary>
internal sealed record BackendHealthSnapshot(
    bool IsUp,
    DateTimeOffset? Since,
    TimeSpan LastDowntime,
    TimeSpan TotalDowntime,
    string? LastDownReason,
    ProbeResult? LastProbe);
