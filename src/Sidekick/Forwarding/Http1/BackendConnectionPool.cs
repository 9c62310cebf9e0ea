using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Sidekick.Networking;
using Sidekick.Topology.Dns;

namespace Sidekick.Forwarding.Http1;

/// <summary>A backend host's addresses (through the process-wide DNS cache when one is set).</summary>
internal delegate ValueTask<IPAddress[]> BackendResolve(string host, CancellationToken cancellationToken);

/// <summary>
/// The keep-alive connections to one backend. Idle connections are reused most-recent first (so a burst's
/// extra connections age out), retired after the idle timeout, and checked for a backend-side close before
/// reuse once they have been idle long enough for a backend to have dropped them, or always for a request
/// that must not be sent twice.
/// </summary>
internal sealed class BackendConnectionPool
{
    /// <summary>Below this idle time no backend has closed a keep-alive connection; above it, we look first.</summary>
    private const long StaleCheckAfterMilliseconds = 1000;

    private readonly Lock _gate = new();
    // Used as a stack: most recently returned last, so the oldest are at the front when they expire.
    private readonly List<BackendConnection> _idle = [];
    private readonly HashSet<BackendConnection> _open = [];
    private bool _retired;

    public BackendConnectionPool(string destinationPrefix)
    {
        var uri = new Uri(destinationPrefix);
        Endpoint = new DnsEndPoint(uri.IdnHost, uri.Port);
        Authority = uri.Authority;
    }

    public DnsEndPoint Endpoint { get; }

    /// <summary>host:port as a Host header would carry it.</summary>
    public string Authority { get; }

    public long LastUsed { get; private set; } = Environment.TickCount64;

    /// <summary>
    /// A live idle connection, or null when a new one must be opened. <paramref name="mustBeAlive"/> checks
    /// even a connection idle for a moment: a request that cannot be resent (POST) should not find out
    /// by sending on a connection the backend has just closed.
    /// </summary>
    public BackendConnection? TakeIdle(bool mustBeAlive)
    {
        var now = Environment.TickCount64;
        LastUsed = now;
        while (true)
        {
            BackendConnection? connection;
            lock (_gate)
            {
                if (_idle.Count == 0)
                {
                    return null;
                }

                connection = _idle[^1];
                _idle.RemoveAt(_idle.Count - 1);
            }

            if ((!mustBeAlive && now - connection.IdleSince < StaleCheckAfterMilliseconds) || !connection.LooksDead())
            {
                return connection;
            }

            connection.Dispose();
        }
    }

    /// <summary>
    /// Opens a connection to the first of the backend's addresses that accepts, through sidekick's event
    /// loops when <paramref name="loops"/> is set, all within <paramref name="timeout"/>.
    /// </summary>
    public async ValueTask<BackendConnection> ConnectAsync(BackendResolve resolve, EventLoops? loops, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        BackendConnection connection;
        try
        {
            var addresses = await resolve(Endpoint.Host, deadline.Token);
            connection = loops is null
                ? new BackendConnection(await BackendSockets.ConnectAsync(addresses, Endpoint.Port, deadline.Token), this)
                : new BackendConnection(await BackendSockets.ConnectAsync(addresses, Endpoint.Port, loops, deadline.Token), this);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new SocketException((int)SocketError.TimedOut);
        }

        lock (_gate)
        {
            _open.Add(connection);
        }

        return connection;
    }

    /// <summary>Takes back a connection whose exchange ended cleanly.</summary>
    public void Return(BackendConnection connection)
    {
        connection.IdleSince = Environment.TickCount64;
        lock (_gate)
        {
            if (!_retired && !connection.IsClosed)
            {
                _idle.Add(connection);
                return;
            }
        }

        connection.Dispose();
    }

    public void OnClosed(BackendConnection connection)
    {
        lock (_gate)
        {
            _open.Remove(connection);
        }
    }

    /// <summary>
    /// Closes connections idle longer than <paramref name="idleTimeout"/> and cuts exchanges past their
    /// activity deadline. Returns true when the pool is empty, unused for a while, and now retired.
    /// </summary>
    public bool Sweep(long now, TimeSpan idleTimeout)
    {
        List<BackendConnection>? expired = null;
        List<BackendConnection>? stalled = null;
        lock (_gate)
        {
            var old = 0;
            while (old < _idle.Count && now - _idle[old].IdleSince >= (long)idleTimeout.TotalMilliseconds)
            {
                old++;
            }

            if (old > 0)
            {
                expired = _idle.GetRange(0, old);
                _idle.RemoveRange(0, old);
            }

            foreach (var connection in _open)
            {
                if (connection.ActivityDeadline != 0 && now > connection.ActivityDeadline)
                {
                    (stalled ??= []).Add(connection);
                }
            }

            if (_open.Count == 0 && _idle.Count == 0 && now - LastUsed > 2 * (long)idleTimeout.TotalMilliseconds)
            {
                _retired = true;
            }
        }

        expired?.ForEach(static c => c.Dispose());
        stalled?.ForEach(static c => c.TimeOut());
        return _retired;
    }

    /// <summary>Closes every connection (idle or busy) for shutdown.</summary>
    public void CloseAll()
    {
        BackendConnection[] all;
        lock (_gate)
        {
            _retired = true;
            _idle.Clear();
            all = [.. _open];
        }

        foreach (var connection in all)
        {
            connection.Dispose();
        }
    }
}

/// <summary>One pool per backend destination, and the timer that retires idle connections and stalled exchanges.</summary>
internal sealed class BackendConnectionPools : IDisposable
{
    private readonly ConcurrentDictionary<string, BackendConnectionPool> _pools = new(StringComparer.Ordinal);
    private readonly TimeSpan _idleTimeout;
    private readonly Timer _sweeper;

    public BackendConnectionPools(TimeSpan idleTimeout)
    {
        _idleTimeout = idleTimeout;
        _sweeper = new Timer(static state => ((BackendConnectionPools)state!).Sweep(), this, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
    }

    public BackendConnectionPool For(string destinationPrefix) =>
        _pools.GetOrAdd(destinationPrefix, static prefix => new BackendConnectionPool(prefix));

    public void Dispose()
    {
        _sweeper.Dispose();
        foreach (var pool in _pools.Values)
        {
            pool.CloseAll();
        }
    }

    private void Sweep()
    {
        var now = Environment.TickCount64;
        foreach (var (prefix, pool) in _pools)
        {
            if (pool.Sweep(now, _idleTimeout))
            {
                _pools.TryRemove(new KeyValuePair<string, BackendConnectionPool>(prefix, pool));
            }
        }
    }
}
