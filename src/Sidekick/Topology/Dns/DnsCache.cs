using System.Collections.Concurrent;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;

namespace Sidekick.Topology.Dns;

/// <summary>
/// Process-wide DNS cache for backend names: concurrent lookups of one name share a single query, answers
/// are refreshed every --dns-ttl for names used since the last refresh (a failed refresh keeps the old
/// answer), unused names are dropped, and failures are never cached. A lookup that fails for a name that resolved
/// before (dropped while its pooled connections served, then asked again when the resolver is down or the process is
/// out of descriptors) gets that last answer, until the next refresh asks again, rather than an error: an error marks
/// the backend down at once (a connect failure). Its <see cref="ConnectAsync"/> is the
/// connection callback of every site's pool (and <see cref="ConnectSocketAsync"/> that of the HTTP/1.1
/// fast path): it tries the addresses in order until one connects.
/// </summary>
internal sealed class DnsCache : IDisposable
{
    private static readonly TimeSpan LookupTimeout = TimeSpan.FromSeconds(5);

    private readonly IHostResolver _resolver;
    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.OrdinalIgnoreCase);
    // The last answer of every name that ever resolved (backend names: as many as the configuration has had).
    private readonly ConcurrentDictionary<string, IPAddress[]> _lastKnown = new(StringComparer.OrdinalIgnoreCase);
    private readonly ITimer _refresh;

    public DnsCache(IHostResolver resolver, TimeSpan ttl, TimeProvider time)
    {
        _resolver = resolver;
        _refresh = time.CreateTimer(_ => _ = RefreshAsync(), null, ttl, ttl);
    }

    /// <summary>Names currently cached (for tests and diagnostics).</summary>
    public IReadOnlyCollection<string> Names => _entries.Keys.ToArray();

    public async ValueTask<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        if (IPAddress.TryParse(host.Trim('[', ']'), out var literal))
        {
            return [literal];
        }

        var entry = _entries.GetOrAdd(host, static (name, cache) => new Entry(cache.LookupAsync(name)), this);
        entry.Used = true;
        try
        {
            return await entry.Addresses.WaitAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is SocketException or TimeoutException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            // Failures are not cached: the next request asks again. A name that resolved before keeps its last answer
            // until the next refresh asks again (connections meanwhile do not each wait for a failing resolver).
            if (_lastKnown.TryGetValue(host, out var last))
            {
                _entries.TryUpdate(host, new Entry(Task.FromResult(last)) { Used = true }, entry);
                return last;
            }

            _entries.TryRemove(new KeyValuePair<string, Entry>(host, entry));
            throw;
        }
    }

    public async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken) =>
        new NetworkStream(await ConnectSocketAsync(context.DnsEndPoint, cancellationToken), ownsSocket: true);

    /// <summary>Resolves (from the cache) and connects to the first address that accepts.</summary>
    public async ValueTask<Socket> ConnectSocketAsync(DnsEndPoint endpoint, CancellationToken cancellationToken) =>
        await BackendSockets.ConnectAsync(await ResolveAsync(endpoint.Host, cancellationToken), endpoint.Port, cancellationToken);

    /// <summary>Re-resolves names used since the last refresh and drops the others.</summary>
    public async Task RefreshAsync()
    {
        foreach (var (name, entry) in _entries)
        {
            if (!entry.Used)
            {
                _entries.TryRemove(new KeyValuePair<string, Entry>(name, entry));
                continue;
            }

            entry.Used = false;
            try
            {
                var fresh = await LookupAsync(name);
                _entries[name] = new Entry(Task.FromResult(fresh)) { Used = false };
            }
            catch (Exception ex) when (ex is SocketException or TimeoutException or OperationCanceledException)
            {
                // Keep the previous answer: a flaky resolver must not take working backends away.
            }
        }
    }

    public void Dispose() => _refresh.Dispose();

    private async Task<IPAddress[]> LookupAsync(string host)
    {
        using var timeout = new CancellationTokenSource(LookupTimeout);
        var addresses = await _resolver.ResolveAsync(host, timeout.Token);
        if (addresses.Length == 0)
        {
            throw new SocketException((int)SocketError.HostNotFound);
        }

        _lastKnown[host] = addresses;
        return addresses;
    }

    private sealed class Entry(Task<IPAddress[]> addresses)
    {
        public Task<IPAddress[]> Addresses { get; } = addresses;

        public bool Used { get; set; }
    }
}
