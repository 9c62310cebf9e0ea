namespace Sidekick.Routing;

/// <summary>
/// Where a request that finds no backend to go to waits for one, instead of getting a 502 that a moment's
/// patience would have avoided (a sidecar often starts before its backends, and a restarting cluster
/// comes back within a second or two). Bounded in time (<c>--wait-for-backend</c>) and in count
/// (<c>--wait-queue</c>), so a dead cluster cannot pile requests up; while requests wait, down backends are
/// probed at once so the first that returns is found.
/// </summary>
internal sealed class BackendWait
{
    /// <summary>Waiters look again this often even without a backend coming up (an ejection ends on its own).</summary>
    private static readonly TimeSpan Recheck = TimeSpan.FromMilliseconds(50);

    private readonly TimeSpan _limit;
    private readonly int _maxWaiting;
    private readonly TimeProvider _time;
    private readonly Action _probeDownBackends;
    private TaskCompletionSource _backendUp = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _waiting;
    private long _lastProbeCall;
    private long _served;
    private long _timedOut;
    private long _rejected;
    private long _abandoned;

    public BackendWait(TimeSpan limit, int maxWaiting, TimeProvider time, Action probeDownBackends)
    {
        _limit = limit;
        _maxWaiting = maxWaiting;
        _time = time;
        _probeDownBackends = probeDownBackends;
    }

    public bool Enabled => _limit > TimeSpan.Zero && _maxWaiting > 0;

    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>Waits that ended with a backend to go to.</summary>
    public long Served => Volatile.Read(ref _served);

    /// <summary>Waits that reached <c>--wait-for-backend</c>.</summary>
    public long TimedOut => Volatile.Read(ref _timedOut);

    /// <summary>Requests that found the queue full and were answered at once.</summary>
    public long Rejected => Volatile.Read(ref _rejected);

    /// <summary>Waits the client gave up on.</summary>
    public long Abandoned => Volatile.Read(ref _abandoned);

    /// <summary>A backend came up: every waiter looks again.</summary>
    public void OnBackendUp()
    {
        if (Volatile.Read(ref _waiting) > 0)
        {
            Interlocked.Exchange(ref _backendUp, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    /// <summary>Waits until <paramref name="available"/> says a backend can take the request; false when the wait ends without one.</summary>
    public async Task<bool> WaitAsync(Func<bool> available, CancellationToken aborted)
    {
        if (Interlocked.Increment(ref _waiting) > _maxWaiting)
        {
            Interlocked.Decrement(ref _waiting);
            Interlocked.Increment(ref _rejected);
            return false;
        }

        try
        {
            var started = _time.GetTimestamp();
            while (true)
            {
                var backendUp = Volatile.Read(ref _backendUp).Task;
                if (available())
                {
                    Interlocked.Increment(ref _served);
                    return true;
                }

                var remaining = _limit - _time.GetElapsedTime(started);
                if (remaining <= TimeSpan.Zero)
                {
                    Interlocked.Increment(ref _timedOut);
                    return false;
                }

                // One wake-up per recheck period for all waiters: the probe loops need no more.
                var last = Volatile.Read(ref _lastProbeCall);
                if ((last == 0 || _time.GetElapsedTime(last) >= Recheck) && Interlocked.CompareExchange(ref _lastProbeCall, _time.GetTimestamp(), last) == last)
                {
                    _probeDownBackends();
                }

                using (var cut = CancellationTokenSource.CreateLinkedTokenSource(aborted))
                {
                    await Task.WhenAny(backendUp, Task.Delay(remaining < Recheck ? remaining : Recheck, _time, cut.Token));
                    await cut.CancelAsync();
                }

                if (aborted.IsCancellationRequested)
                {
                    Interlocked.Increment(ref _abandoned);
                    return false;
                }
            }
        }
        finally
        {
            Interlocked.Decrement(ref _waiting);
        }
    }
}
