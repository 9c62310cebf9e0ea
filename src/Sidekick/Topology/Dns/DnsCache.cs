using System.Collections.Concurrent;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;

namespace Sidekick.Topology.Dns;

/// <summary>
/// Process-wide DNS cache for backend names: concurrent lookups of one name share a single query, answers
/// are refreshed every --dns-ttl for names used since the last refresh (a failed refresh keeps the old
/// answer), unused names are dropped, and a failed lookup answers for its name for <see cref="FailureHeld"/>, no
/// longer. A lookup that fails for a name that resolved
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
    private readonly TimeProvider _time;

    public DnsCache(IHostResolver resolver, TimeSpan ttl, TimeProvider time)
    {
        _resolver = resolver;
        _time = time;
        _refresh = time.CreateTimer(_ => _ = RefreshAsync(), null, ttl, ttl);
    }

    /// <summary>
    /// How long a failed lookup of a name that never resolved answers for it (counted from the lookup's start). A lookup
    /// holds a thread-pool thread in getaddrinfo for as long as it takes, and down backends are probed every 100 ms
    /// at first: with a lookup per probe, 128 names that did not resolve (records not created yet) took the pool from
    /// the proxy for half a minute (its health endpoint answered in 8 s) and 256 kept SIGTERM waiting 15 s.
    /// </summary>
    internal static TimeSpan FailureHeld { get; } = TimeSpan.FromSeconds(1);

    /// <summary>Names currently cached (for tests and diagnostics).</summary>
    public IReadOnlyCollection<string> Names => _entries.Keys.ToArray();

    public async ValueTask<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        if (IPAddress.TryParse(host.Trim('[', ']'), out var literal))
        {
            return [literal];
        }

        var entry = _entries.GetOrAdd(host, static (name, cache) => cache.NewLookup(name), this);
        if (entry.Addresses is { IsCompleted: true, IsCompletedSuccessfully: false } && _time.GetElapsedTime(entry.Started) >= FailureHeld)
        {
            // Held long enough: ask again. One caller replaces the failure; the others share its lookup (an entry starts
            // its lookup when first read, so one made by a caller that lost the race costs nothing).
            var fresh = NewLookup(host);
            entry = _entries.TryUpdate(host, fresh, entry) ? fresh : _entries.GetOrAdd(host, static (name, cache) => cache.NewLookup(name), this);
        }

        entry.Used = true;
        try
        {
            return await entry.Addresses.WaitAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is SocketException or TimeoutException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            // A name that resolved before keeps its last answer until the next refresh asks again (connections
            // meanwhile do not each wait for a failing resolver). Any other failure answers for FailureHeld.
            if (_lastKnown.TryGetValue(host, out var last))
            {
                _entries.TryUpdate(host, new Entry(last, _time.GetTimestamp()) { Used = true }, entry);
                return last;
            }

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
                _entries[name] = new Entry(fresh, _time.GetTimestamp()) { Used = false };
            }
            catch (Exception ex) when (ex is SocketException or TimeoutException or OperationCanceledException)
            {
                // Keep the previous answer: a flaky resolver must not take working backends away.
            }
        }
    }

    public void Dispose() => _refresh.Dispose();

    private Entry NewLookup(string host) => new(() => LookupAsync(host), _time.GetTimestamp());

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

    private sealed class Entry
    {
        private readonly Lazy<Task<IPAddress[]>> _addresses;

        /// <summary>A lookup, started when the addresses are first asked for.</summary>
        public Entry(Func<Task<IPAddress[]>> lookup, long started)
        {
            _addresses = new(lookup);
            Started = started;
        }

        public Entry(IPAddress[] known, long started)
        {
            _addresses = new(Task.FromResult(known));
            Started = started;
        }

        public Task<IPAddress[]> Addresses => _addresses.Value;

        /// <summary>When the lookup began (a <see cref="TimeProvider"/> timestamp).</summary>
        public long Started { get; }

        public bool Used { get; set; }
    }
}
