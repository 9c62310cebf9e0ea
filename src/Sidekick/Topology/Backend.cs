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
    private DateTimeOffset? _downSince;
    private DateTimeOffset? _upSince;
    private TimeSpan _lastDowntime;
    private TimeSpan _totalDowntime;
    private string? _lastDownReason;
    private ProbeResult? _lastProbe;
    private volatile bool _lastProbeHealthy;
    private bool _reportedDown;
    private bool _everUp;
    // Timestamps of the TimeProvider (0: none), so tests move time instead of sleeping.
    private long _ejectedUntil;
    private long _warmStart;
    private int _consecutiveGatewayErrors;
    private int _ejections;
    private int _consecutiveBrokenResponses;
    private string? _lastBrokenRequest;

    public Backend(BackendDefinition definition, int siteNumber, TimeProvider time)
    {
        Definition = definition;
        SiteNumber = siteNumber;
        _time = time;
        _downSince = time.GetUtcNow();
        // The forwarder wants a prefix without a trailing slash; the client's raw target is appended.
        DestinationPrefix = definition.Endpoint.GetLeftPart(UriPartial.Authority);
        OnLoopback = Forwarding.LoopbackBypassProxy.IsLoopback(definition.Endpoint);
    }

    public BackendDefinition Definition { get; }

    public int SiteNumber { get; }

    /// <summary>The endpoint as shown in logs, tables and metric labels, e.g. <c>http://minio1:9000</c>.</summary>
    public string Name => Definition.EndpointText;

    public string DestinationPrefix { get; }

    /// <summary>
    /// On this host's loopback (<see cref="Forwarding.LoopbackBypassProxy.IsLoopback"/>): never reached through the
    /// environment's HTTP proxy. The one answer the site's connection pool and the forwarding path both follow.
    /// </summary>
    public bool OnLoopback { get; }

    public BackendStats Stats { get; } = new();

    public bool IsUp => _state == Up;

    /// <summary>Up and not ejected by outlier detection: eligible for new requests.</summary>
    public bool IsServing => _state == Up && !IsEjected;

    public bool IsEjected
    {
        get
        {
            // Read the clock only for a backend that was ever ejected: the request path asks this per pick.
            var until = Volatile.Read(ref _ejectedUntil);
            return until != 0 && _time.GetTimestamp() < until;
        }
    }

    /// <summary>
    /// Taken out of rotation by the request path alone (a passive mark-down or an ejection) while its
    /// latest probe passed: what the panic rule may still use when nothing else serves. A backend down
    /// because of its probe, or never probed yet, is not.
    /// </summary>
    public bool IsPassivelyOut => _lastProbeHealthy && (_state == Down || IsEjected);

    /// <summary>
    /// Share of full load this backend should take while warming up after a recovery, in (0, 1].
    /// </summary>
    public double WarmupFactor(long warmupMilliseconds)
    {
        var start = Volatile.Read(ref _warmStart);
        if (start == 0 || warmupMilliseconds <= 0)
        {
            return 1;
        }

        var elapsed = _time.GetElapsedTime(start).TotalMilliseconds;
        return elapsed >= warmupMilliseconds ? 1 : Math.Max(0.05, elapsed / warmupMilliseconds);
    }

    /// <summary>
    /// True when the backend came back from a failure less than <paramref name="holdDownMilliseconds"/> ago.
    /// The first up after start is not a recovery.
    /// </summary>
    public bool IsRecoveringWithin(long holdDownMilliseconds)
    {
        var start = Volatile.Read(ref _warmStart);
        return start != 0 && _time.GetElapsedTime(start).TotalMilliseconds < holdDownMilliseconds;
    }

    /// <summary>
    /// Counts consecutive gateway errors (502/503/504) from this backend; any other status resets the run.
    /// Returns the current run length.
    /// </summary>
    public int RecordGatewayOutcome(bool gatewayError)
    {
        if (gatewayError)
        {
            return Interlocked.Increment(ref _consecutiveGatewayErrors);
        }

        // Read first: the common case (no run in progress) must not write a shared cache line per request.
        if (Volatile.Read(ref _consecutiveGatewayErrors) != 0)
        {
            Volatile.Write(ref _consecutiveGatewayErrors, 0);
        }

        return 0;
    }

    /// <summary>
    /// Takes the backend out of rotation until the back-off ends. The back-off grows with each ejection and
    /// shrinks by one step for each <paramref name="baseTime"/> the backend served since its last ejection
    /// ended (as Envoy's multiplier decays): a backend that misbehaved once last week is ejected for the base
    /// time again, not for the longest one.
    /// </summary>
    public TimeSpan Eject(TimeSpan baseTime, TimeSpan maxTime)
    {
        int count;
        var now = _time.GetTimestamp();
        lock (_transitionGate)
        {
            count = _ejections;
            var lastEnded = Volatile.Read(ref _ejectedUntil);
            if (count > 0 && baseTime > TimeSpan.Zero && now > lastEnded)
            {
                var served = _time.GetElapsedTime(lastEnded, now);
                count = (int)Math.Max(0, count - served.Ticks / baseTime.Ticks);
            }

            _ejections = ++count;
        }

        var duration = TimeSpan.FromTicks(Math.Min(maxTime.Ticks, baseTime.Ticks * count));
        Volatile.Write(ref _ejectedUntil, now + (long)(duration.TotalSeconds * _time.TimestampFrequency));
        Interlocked.Exchange(ref _consecutiveGatewayErrors, 0);
        return duration;
    }

    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Cancelled when the backend leaves the topology; stops its probe loop.</summary>
    public CancellationTokenSource Lifetime { get; } = new();

    /// <summary>Raised after every up/down transition (never for a repeated state).</summary>
    public event Action<Backend, BackendTransition>? StateChanged;

    /// <summary>How long the backend has been up without interruption; zero while down.</summary>
    public TimeSpan UpFor
    {
        get
        {
            lock (_transitionGate)
            {
                return IsUp && _upSince is { } since ? _time.GetUtcNow() - since : TimeSpan.Zero;
            }
        }
    }

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

    public void EndRequest() => Interlocked.Decrement(ref _inFlight);

    public void RecordProbe(ProbeResult result)
    {
        lock (_transitionGate)
        {
            _lastProbe = result;
            _lastProbeHealthy = result.Healthy;
        }
    }

    /// <summary>
    /// Counts a broken response (a head that cannot be parsed, a body cut short, a connection closed or
    /// silent mid-exchange) towards a run of them; the run counts each request once, so one bad URL
    /// retried on the same backend is one (<paramref name="requestId"/>: the request's trace identifier,
    /// the same for all its attempts). Returns the run's length.
    /// </summary>
    public int RecordBrokenResponse(string requestId)
    {
        lock (_transitionGate)
        {
            if (!string.Equals(_lastBrokenRequest, requestId, StringComparison.Ordinal))
            {
                _lastBrokenRequest = requestId;
                _consecutiveBrokenResponses++;
            }

            return _consecutiveBrokenResponses;
        }
    }

    /// <summary>A complete response ends a run of broken ones.</summary>
    public void RecordCompleteResponse()
    {
        // Read first: the common case (no run in progress) must not write a shared cache line per request.
        if (Volatile.Read(ref _consecutiveBrokenResponses) != 0)
        {
            lock (_transitionGate)
            {
                _consecutiveBrokenResponses = 0;
                _lastBrokenRequest = null;
            }
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
            // A new run of broken responses starts: the one that marked it down would otherwise take it down again at
            // the first broken response after the probe brought it back.
            _consecutiveBrokenResponses = 0;
            _lastBrokenRequest = null;
            // Only a recovery warms up; the first up at start takes a full share at once.
            Volatile.Write(ref _warmStart, _everUp ? _time.GetTimestamp() : 0);
            _everUp = true;
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
