namespace Sidekick.Caching;

/// <summary>
/// One probe loop for the whole process (not one per backend, as upstream had): the store is online after a
/// good probe and goes offline after a failed probe or any failed store operation, until the next good probe.
/// While offline, requests bypass the cache at no cost.
/// </summary>
internal sealed class CacheHealth : IDisposable
{
    private readonly S3CacheStore _store;
    private readonly CacheMetrics _metrics;
    private readonly TimeSpan _interval;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stop = new();
    private volatile bool _online;

    public CacheHealth(S3CacheStore store, CacheMetrics metrics, TimeSpan interval, TimeProvider time)
    {
        _store = store;
        _metrics = metrics;
        _interval = interval;
        _time = time;
        _ = Task.Run(LoopAsync);
    }

    public bool Online => _online;

    /// <summary>A store operation failed or was too slow: bypass until the next good probe.</summary>
    public void MarkOffline()
    {
        _metrics.StoreError();
        _online = false;
    }

    public async Task<bool> ProbeAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            await _store.ProbeAsync(timeout.Token);
            _online = true;
        }
        catch (Exception ex) when (ex is OperationCanceledException or Amazon.Runtime.AmazonServiceException or Amazon.Runtime.AmazonClientException or HttpRequestException or IOException)
        {
            _online = false;
        }

        return _online;
    }

    public void Dispose()
    {
        _stop.Cancel();
        _stop.Dispose();
    }

    private async Task LoopAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                await ProbeAsync();
                await Task.Delay(_interval, _time, _stop.Token);
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
