namespace Sidekick.Topology;

/// <summary>
/// One failover tier: its backends in argument order and the connection pool they share.
/// Immutable; a new instance replaces it when the topology is rebuilt.
/// </summary>
internal sealed class Site(int number, Backend[] backends, HttpMessageInvoker invoker)
{
    /// <summary>1-based position on the command line; lower numbers are preferred.</summary>
    public int Number { get; } = number;

    public Backend[] Backends { get; } = backends;

    /// <summary>Shared by proxied requests and probes of this site, as upstream does (one transport per site).</summary>
    public HttpMessageInvoker Invoker { get; } = invoker;

    /// <summary>
    /// True when a backend serves and, with a failback hold-down, has not just recovered: a flapping site
    /// must stay healthy for the hold-down before it takes traffic back.
    /// </summary>
    public bool HasSettledBackend(long holdDownMilliseconds)
    {
        foreach (var backend in Backends)
        {
            if (backend.IsServing && !backend.IsRecoveringWithin(holdDownMilliseconds))
            {
                return true;
            }
        }

        return false;
    }

    public bool HasUpBackend
    {
        get
        {
            foreach (var backend in Backends)
            {
                if (backend.IsServing)
                {
                    return true;
                }
            }

            return false;
        }
    }
}

/// <summary>
/// The sites in failover order, as one immutable value. A request reads one snapshot and never sees a
/// half-applied reload.
/// </summary>
internal sealed class TopologySnapshot(Site[] sites)
{
    public static TopologySnapshot Empty { get; } = new([]);

    public Site[] Sites { get; } = sites;

    /// <summary>The first site with an up backend, or null when everything is down.</summary>
    public Site? ActiveSite
    {
        get
        {
            foreach (var site in Sites)
            {
                if (site.HasUpBackend)
                {
                    return site;
                }
            }

            return null;
        }
    }

    /// <summary>
    /// The site requests go to: the first with a settled backend (see <see cref="Site.HasSettledBackend"/>);
    /// when none is settled, the first with any serving backend.
    /// </summary>
    public Site? SelectSite(long holdDownMilliseconds)
    {
        if (holdDownMilliseconds <= 0)
        {
            return ActiveSite;
        }

        foreach (var site in Sites)
        {
            if (site.HasSettledBackend(holdDownMilliseconds))
            {
                return site;
            }
        }

        return ActiveSite;
    }

    public IEnumerable<Backend> AllBackends => Sites.SelectMany(static s => s.Backends);
}

/// <summary>Holds the current snapshot; swapped atomically on SIGHUP or DNS changes.</summary>
internal sealed class TopologyStore
{
    private volatile TopologySnapshot _current = TopologySnapshot.Empty;

    public TopologySnapshot Current => _current;

    /// <summary>Raised after a new snapshot is published, with the old and new values.</summary>
    public event Action<TopologySnapshot, TopologySnapshot>? Changed;

    public void Publish(TopologySnapshot next)
    {
        var previous = Interlocked.Exchange(ref _current, next);
        Changed?.Invoke(previous, next);
    }
}
