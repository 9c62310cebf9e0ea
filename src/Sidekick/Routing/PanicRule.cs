using Sidekick.Topology;

namespace Sidekick.Routing;

/// <summary>
/// Envoy's panic threshold for sidekick's passive marks: when no site has a serving backend, requests go to
/// the first site whose backends were taken out by the request path alone (a passive mark-down or an
/// outlier ejection) while their probes still pass. The request path judges one response at a time and can
/// be wrong about a whole site; the probe is the authority on "down", so its word keeps the site in use.
/// </summary>
internal sealed class PanicRule
{
    private int _site;
    private long _requests;

    /// <summary>Raised when panic begins (with the site) and ends (with 0).</summary>
    public event Action<int>? Changed;

    /// <summary>The site in panic, 0 when none.</summary>
    public int Site => Volatile.Read(ref _site);

    /// <summary>Requests sent to passively marked backends.</summary>
    public long Requests => Volatile.Read(ref _requests);

    /// <summary>The first site with a passively marked backend whose probe passes, or null.</summary>
    public static Site? SelectSite(TopologySnapshot topology)
    {
        foreach (var site in topology.Sites)
        {
            if (Pick(site.Backends) is not null)
            {
                return site;
            }
        }

        return null;
    }

    /// <summary>Fewest in flight among the passively marked backends whose probes pass.</summary>
    public static Backend? Pick(Backend[] backends)
    {
        Backend? chosen = null;
        foreach (var backend in backends)
        {
            if (backend.IsPassivelyOut && (chosen is null || backend.InFlight < chosen.InFlight))
            {
                chosen = backend;
            }
        }

        return chosen;
    }

    /// <summary>Claims a backend under the panic rule (counted in flight), or null when there is none.</summary>
    public (Site Site, Backend Backend)? Claim(TopologySnapshot topology)
    {
        if (SelectSite(topology) is not { } site || Pick(site.Backends) is not { } backend)
        {
            return null;
        }

        backend.BeginRequest();
        Interlocked.Increment(ref _requests);
        if (Interlocked.Exchange(ref _site, site.Number) != site.Number)
        {
            Changed?.Invoke(site.Number);
        }

        return (site, backend);
    }

    /// <summary>A request found a serving backend again: panic is over (one read when it was not on).</summary>
    public void Serving()
    {
        if (Volatile.Read(ref _site) != 0 && Interlocked.Exchange(ref _site, 0) != 0)
        {
            Changed?.Invoke(0);
        }
    }
}
