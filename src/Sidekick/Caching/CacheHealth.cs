namespace Sidekick.Caching;

/// <summary>
/// One probe loop for the whole process (not one per backend, as upstream had): the store is online after a
/// good probe and goes offline after a failed probe or any failed store operation (lookups that failed as a busy store
/// fails them: once <see cref="SlowLookupsToOffline"/> did within <see cref="SlowLookupWindow"/>), until the next good probe.
/// While offline, requests bypass the cache at no cost. A failed store operation does not wait for the next
/// scheduled probe (SIDEKICK_CACHE_HEALTH_DURATION, a minute by default): the store is probed again after
/// <see cref="FirstRetry"/>, then at doubling intervals up to the configured one while it keeps failing. One
/// answer slower than the store timeout (a loaded store, measured with s3rver in bench/cache.sh) would otherwise
/// turn the cache off for a minute. Every failure is counted by reason, and every change
/// of state (healthy, or unhealthy for another reason) is told to the watchers once: the log and /v1/state
/// say why the cache is bypassed.
/// </summary>
internal sealed class CacheHealth : IDisposable
{
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(5);

    private readonly S3CacheStore _store;
    private readonly CacheMetrics _metrics;
    private readonly TimeSpan _interval;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _firstProbe = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _gate = new();
    private readonly List<Action<CacheHealthTransition>> _watchers = [];
    private volatile bool _online;
    private bool _everOnline;
    private DateTimeOffset? _since;
    private CacheStoreFailure? _failing;
    private CacheStoreFailure? _lastError;
    private DateTimeOffset? _lastErrorAt;
    private CacheHealthTransition? _lastTransition;
    private CancellationTokenSource? _napping; // the loop's wait after a good probe; a failure cuts it short

    public CacheHealth(S3CacheStore store, CacheMetrics metrics, TimeSpan interval, TimeProvider time)
    {
        _store = store;
        _metrics = metrics;
        _interval = interval;
        _time = time;
        _ = Task.Run(LoopAsync);
    }

    public bool Online => _online;

    /// <summary>
    /// How long start-up waits for the first probe before the listener opens, so that the first requests use the
    /// cache instead of bypassing it (a store that does not answer by then is bypassed until it does).
    /// </summary>
    public static TimeSpan FirstProbeWait { get; } = TimeSpan.FromSeconds(2);

    /// <summary>How soon the store is probed again after it failed, doubling while it keeps failing.</summary>
    public static TimeSpan FirstRetry { get; } = TimeSpan.FromSeconds(1);

    /// <summary>Completes when the first probe has answered, well or not.</summary>
    public Task FirstProbe => _firstProbe.Task;

    /// <summary>The store's URL and bucket, as configured.</summary>
    public Uri Endpoint => _store.Endpoint;

    public string Bucket => _store.Bucket;

    /// <summary>A store operation failed or was too slow: bypass until the next good probe.</summary>
    public void MarkOffline(Exception? error = null)
    {
        if (!Networking.LocalShortage.Find(error, out _))
        {
            Fail(CacheStoreFailure.Of(error));
        }
    }

    /// <summary>
    /// Lookups that failed as a busy store fails them, within <see cref="SlowLookupWindow"/>, that take the store
    /// offline: no answer within the store timeout, or a 5xx answer twice in a row (the read's one retry), such as S3's
    /// 503 SlowDown when a prefix gets more requests than it takes. A store busy taking a large upload (s3rver with a 2
    /// GiB entry, measured in bench/awscli-results.md) lets a lookup time out now and then while it answers the rest:
    /// taking it offline at the first one sent every request of every client to the origin for a second or more. A
    /// store that stops answering, or answers only some lookups, still goes offline once this many failed within the
    /// window, and one that refuses the connection or rejects the request (403, NoSuchBucket) goes offline at once.
    /// </summary>
    public const int SlowLookupsToOffline = 3;

    /// <inheritdoc cref="SlowLookupsToOffline"/>
    public static TimeSpan SlowLookupWindow { get; } = TimeSpan.FromSeconds(10);

    // When the latest busy lookups failed (TimeProvider timestamps), oldest first; emptied when the store goes offline.
    private readonly Queue<long> _busyLookups = new(SlowLookupsToOffline);

    /// <summary>
    /// A lookup (or the read of the body a HEAD lookup found) failed: its request bypasses the cache, and the store goes
    /// offline unless it was only busy (<see cref="CacheStoreFailure.Busy"/>) and fewer than
    /// <see cref="SlowLookupsToOffline"/> such lookups failed within <see cref="SlowLookupWindow"/>.
    /// </summary>
    public void LookupFailed(Exception error, TimeSpan timeout)
    {
        if (Networking.LocalShortage.Find(error, out _))
        {
            return; // sidekick had no socket for the store (out of descriptors): the request bypasses, the store stays
        }

        var failure = CacheStoreFailure.Of(error, timeout);
        if (failure.Busy && ToleratedAsBusy(failure))
        {
            _metrics.StoreError(failure);
            return;
        }

        Fail(failure);
    }

    /// <summary>
    /// Counts one busy lookup and, while fewer than <see cref="SlowLookupsToOffline"/> fell within the window, keeps it
    /// as the last error (for /v1/state) and says it is tolerated.
    /// </summary>
    private bool ToleratedAsBusy(CacheStoreFailure failure)
    {
        failure = failure.WithoutSecrets(_store.AccessKey);
        var now = _time.GetTimestamp();
        lock (_gate)
        {
            while (_busyLookups.TryPeek(out var oldest) && _time.GetElapsedTime(oldest, now) > SlowLookupWindow)
            {
                _busyLookups.Dequeue();
            }

            _busyLookups.Enqueue(now);
            if (_busyLookups.Count >= SlowLookupsToOffline)
            {
                return false;
            }

            _lastError = failure;
            _lastErrorAt = _time.GetUtcNow();
            return true;
        }
    }

    public async Task<bool> ProbeAsync()
    {
        using var timeout = new CancellationTokenSource(ProbeTimeout);
        try
        {
            await _store.ProbeAsync(timeout.Token);
        }
        catch (Exception ex) when (Networking.LocalShortage.Find(ex, out _))
        {
            return _online; // no socket to ask with: nothing learnt about the store
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            Fail(CacheStoreFailure.Of(ex, ProbeTimeout));
            return false;
        }

        Succeed();
        return true;
    }

    /// <summary>A consistent read for /v1/state.</summary>
    public CacheHealthSnapshot Snapshot()
    {
        lock (_gate)
        {
            return new CacheHealthSnapshot(_online, _since, _lastError, _lastErrorAt);
        }
    }

    /// <summary>
    /// Tells <paramref name="watcher"/> every later change of state, and first the latest one if the store was
    /// already probed (the loop starts before the server that watches it).
    /// </summary>
    public void Watch(Action<CacheHealthTransition> watcher)
    {
        lock (_gate)
        {
            _watchers.Add(watcher);
            if (_lastTransition is { } last)
            {
                watcher(last);
            }
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _stop.Dispose();
    }

    private void Fail(CacheStoreFailure failure)
    {
        failure = failure.WithoutSecrets(_store.AccessKey);
        _metrics.StoreError(failure);
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            _lastError = failure;
            _lastErrorAt = now;
            if (_online || _since is null)
            {
                _since = now;
            }

            if (_online)
            {
                _ = _napping?.CancelAsync(); // probe again soon, not at the next scheduled probe
            }

            _online = false;
            _busyLookups.Clear(); // counted afresh once the store is back
            // Repeated failures for the same reason are one state: one line, not one per probe or request.
            if (_failing?.Reason != failure.Reason)
            {
                _failing = failure;
                Publish(new CacheHealthTransition(false, now, failure, null, Again: false));
            }
        }
    }

    private void Succeed()
    {
        lock (_gate)
        {
            if (_online)
            {
                return;
            }

            var now = _time.GetUtcNow();
            var downtime = _since is { } since ? now - since : (TimeSpan?)null;
            var again = _everOnline;
            _online = true;
            _everOnline = true;
            _failing = null;
            _since = now;
            Publish(new CacheHealthTransition(true, now, null, again ? downtime : null, again));
        }
    }

    private void Publish(CacheHealthTransition transition)
    {
        _lastTransition = transition;
        foreach (var watcher in _watchers)
        {
            watcher(transition);
        }
    }

    /// <summary>Waits the probe interval after a good probe: true when it passed, false when a store operation failed meanwhile.</summary>
    private async Task<bool> NapAsync()
    {
        using var nap = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        lock (_gate)
        {
            if (!_online)
            {
                return false; // failed between the probe and now
            }

            _napping = nap;
        }

        try
        {
            await Task.Delay(_interval, _time, nap.Token);
            return true;
        }
        catch (OperationCanceledException) when (!_stop.IsCancellationRequested)
        {
            return false;
        }
        finally
        {
            lock (_gate)
            {
                _napping = null;
            }
        }
    }

    private async Task LoopAsync()
    {
        try
        {
            var retry = FirstRetry;
            while (!_stop.IsCancellationRequested)
            {
                var healthy = await ProbeAsync();
                _firstProbe.TrySetResult();
                if (healthy)
                {
                    retry = FirstRetry;
                    if (await NapAsync())
                    {
                        continue;
                    }
                }

                // Failed, or a store operation failed since the last good probe.
                await Task.Delay(retry, _time, _stop.Token);
                retry = TimeSpan.FromTicks(Math.Min(retry.Ticks * 2, Math.Max(_interval.Ticks, FirstRetry.Ticks)));
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }
}

/// <summary>
/// A change of the store's state: healthy, or unhealthy with <paramref name="Failure"/>. <paramref name="Again"/> is a
/// recovery (the store was healthy before), with the <paramref name="Downtime"/> since it failed.
/// </summary>
internal sealed record CacheHealthTransition(bool Healthy, DateTimeOffset At, CacheStoreFailure? Failure, TimeSpan? Downtime, bool Again);

/// <summary>The store's state now, and the last failure seen (kept after a recovery, for "what happened at 3 am").</summary>
internal sealed record CacheHealthSnapshot(bool Healthy, DateTimeOffset? Since, CacheStoreFailure? LastError, DateTimeOffset? LastErrorAt);
