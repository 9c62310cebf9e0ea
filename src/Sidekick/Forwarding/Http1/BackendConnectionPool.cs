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
/// extra connections age out), retired after the idle timeout or shortly before the backend's own one
/// (Keep-Alive: timeout=N), and checked for a backend-side close before reuse once they have been idle long
/// enough for a backend to have dropped them, or always for a request that must not be sent twice. With event
/// loops, idle connections wait in one lane per loop and a request takes one from its own loop's lane first, so
/// an exchange stays on one thread from request to response.
/// </summary>
internal sealed class BackendConnectionPool
{
    /// <summary>Below this idle time no backend has closed a keep-alive connection; above it, we look first.</summary>
    private const long StaleCheckAfterMilliseconds = 1000;

    private readonly Lock _gate = new();
    // One per event loop (one in all without loops). Each is used as a stack: most recently returned last,
    // so the oldest are at the front when they expire.
    private readonly List<BackendConnection>[] _idle;
    private readonly HashSet<BackendConnection> _open = [];
    private bool _retired;

    private readonly TimeProvider _time;
    private readonly long _ticksPerMillisecond;

    public BackendConnectionPool(string destinationPrefix, int lanes = 1, TimeProvider? time = null)
    {
        _time = time ?? TimeProvider.System;
        _ticksPerMillisecond = Math.Max(1, _time.TimestampFrequency / 1000);
        LastUsed = Now;
        _idle = new List<BackendConnection>[lanes];
        for (var i = 0; i < lanes; i++)
        {
            _idle[i] = [];
        }

        var uri = new Uri(destinationPrefix);
        Endpoint = new DnsEndPoint(uri.IdnHost, uri.Port);
        Authority = uri.Authority;
    }

    public DnsEndPoint Endpoint { get; }

    /// <summary>The last header values this backend sent, shared by its connections.</summary>
    public ResponseHeaderValues HeaderValues { get; } = new();

    /// <summary>host:port as a Host header would carry it.</summary>
    public string Authority { get; }

    public long LastUsed { get; private set; }

    /// <summary>The pool's clock in milliseconds (a <see cref="TimeProvider"/>, so tests can drive idle and activity times).</summary>
    public long Now => _time.GetTimestamp() / _ticksPerMillisecond;

    /// <summary>Idle connections (for tests).</summary>
    public int Idle
    {
        get
        {
            lock (_gate)
            {
                return _idle.Sum(static lane => lane.Count);
            }
        }
    }

    /// <summary>Idle connections on which something arrived that the loop has seen (for tests).</summary>
    public int IdleWithArrivals
    {
        get
        {
            lock (_gate)
            {
                return _idle.Sum(static lane => lane.Count(static c => c.MayHaveArrived));
            }
        }
    }

    /// <summary>
    /// A live idle connection, or null when a new one must be opened. <paramref name="mustBeAlive"/> checks
    /// even a connection idle for a moment: a request that cannot be resent (POST) should not find out
    /// by sending on a connection the backend has just closed.
    /// </summary>
    public BackendConnection? TakeIdle(bool mustBeAlive)
    {
        var now = Now;
        LastUsed = now;
        while (true)
        {
            BackendConnection? connection = null;
            lock (_gate)
            {
                // The caller's own lane, then the others: a connection from another loop works, it only
                // finishes the exchange on that loop's thread.
                var own = (EventLoop.Current?.Index ?? 0) % _idle.Length;
                for (var i = 0; i < _idle.Length && connection is null; i++)
                {
                    var lane = _idle[(own + i) % _idle.Length];
                    if (lane.Count > 0)
                    {
                        connection = lane[^1];
                        lane.RemoveAt(lane.Count - 1);
                    }
                }
            }

            if (connection is null)
            {
                return null;
            }

            // Looked at (a system call) when something may have arrived since the last response: stray bytes would be
            // read as the next client's response (and its response as the one after), so such a connection is closed.
            // With event loops the loop's read events tell for free; a connection idle long enough for a backend to
            // have closed it, or one for a request that must not be sent twice, is looked at in any case.
            var idle = now - connection.IdleSince;
            var look = mustBeAlive || idle >= StaleCheckAfterMilliseconds || connection.MayHaveArrived;
            if (!PastKeepAlive(connection, idle) && (!look || !connection.LooksDead()))
            {
                return connection;
            }

            connection.Dispose();
        }
    }

    /// <summary>
    /// Whether the backend's own idle limit (Keep-Alive: timeout=N) is close enough that it may close the
    /// connection while our request is on its way: a second before it (half of it for a limit of a second),
    /// as the close would otherwise race the request and cost a resend, or a 502 for a request that cannot
    /// be resent.
    /// </summary>
    private static bool PastKeepAlive(BackendConnection connection, long idleMilliseconds)
    {
        var limit = connection.KeepAliveSeconds * 1000L;
        return limit > 0 && idleMilliseconds >= limit - Math.Min(1000, limit / 2);
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
        connection.IdleSince = Now;
        lock (_gate)
        {
            if (!_retired && !connection.IsClosed)
            {
                _idle[connection.Lane % _idle.Length].Add(connection);
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
            var idle = 0;
            foreach (var lane in _idle)
            {
                var old = 0;
                while (old < lane.Count && now - lane[old].IdleSince >= (long)idleTimeout.TotalMilliseconds)
                {
                    old++;
                }

                if (old > 0)
                {
                    (expired ??= []).AddRange(lane.GetRange(0, old));
                    lane.RemoveRange(0, old);
                }

                idle += lane.Count;
            }

            foreach (var connection in _open)
            {
                if (connection.ActivityDeadline != 0 && now > connection.ActivityDeadline)
                {
                    (stalled ??= []).Add(connection);
                }
            }

            if (_open.Count == 0 && idle == 0 && now - LastUsed > 2 * (long)idleTimeout.TotalMilliseconds)
            {
                _retired = true;
            }
        }

        expired?.ForEach(static c => c.Dispose());
        foreach (var connection in stalled ?? [])
        {
            connection.TimeOut(now);
        }
        return _retired;
    }

    /// <summary>Closes every connection (idle or busy) for shutdown.</summary>
    public void CloseAll()
    {
        BackendConnection[] all;
        lock (_gate)
        {
            _retired = true;
            foreach (var lane in _idle)
            {
                lane.Clear();
            }

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
    private readonly int _lanes;
    private readonly TimeProvider _time;
    private readonly ITimer _sweeper;

    /// <param name="lanes">Idle lanes per pool: the number of event loops (1 without).</param>
    public BackendConnectionPools(TimeSpan idleTimeout, int lanes, TimeProvider time)
    {
        _idleTimeout = idleTimeout;
        _lanes = lanes;
        _time = time;
        _sweeper = time.CreateTimer(static state => ((BackendConnectionPools)state!).Sweep(), this, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
    }

    /// <summary>Idle connections on which something arrived that the loop has seen (for tests).</summary>
    public int IdleWithArrivals => _pools.Values.Sum(static p => p.IdleWithArrivals);

    /// <summary>Idle connections (for tests).</summary>
    public int Idle => _pools.Values.Sum(static p => p.Idle);

    public BackendConnectionPool For(string destinationPrefix) =>
        _pools.GetOrAdd(destinationPrefix, static (prefix, pools) => new BackendConnectionPool(prefix, pools._lanes, pools._time), this);

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
        foreach (var (prefix, pool) in _pools)
        {
            if (pool.Sweep(pool.Now, _idleTimeout))
            {
                _pools.TryRemove(new KeyValuePair<string, BackendConnectionPool>(prefix, pool));
            }
        }
    }
}
