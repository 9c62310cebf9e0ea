using Sidekick.Topology;

namespace Sidekick.Observability;

/// <summary>
/// Follows which site takes traffic and counts failovers: every move of traffic from one site to another after
/// the first choice. Driven by backend transitions, never by requests.
/// </summary>
/// <remarks>
/// At start every backend is down until its first probe answers, and the probes answer in any order: a second
/// site whose probe answered first takes the traffic for a moment, and the move back to the first site is no
/// failover. A choice therefore counts as made only once every backend has been probed; until then the active
/// site is still the first choice. A time with no site at all (everything down) is no move either: 1, none, 1
/// counts nothing, 1, none, 2 counts one.
/// </remarks>
internal sealed class SiteWatch(TopologyStore topology)
{
    private readonly Lock _gate = new();
    private int _activeSite;
    private int _lastSite;
    private bool _lastSiteSettled;
    private long _failovers;

    public long Failovers => Volatile.Read(ref _failovers);

    public int ActiveSiteNumber => Volatile.Read(ref _activeSite);

    public void Refresh()
    {
        var current = topology.Current;
        var active = current.ActiveSite?.Number ?? 0;
        var settled = current.AllBackends.All(static b => b.GetHealthSnapshot().LastProbe is not null);
        lock (_gate)
        {
            Volatile.Write(ref _activeSite, active);
            if (active == 0)
            {
                return;
            }

            if (active != _lastSite && _lastSite != 0 && _lastSiteSettled)
            {
                _failovers++;
            }

            // A provisional choice becomes the first choice once every backend has answered; a settled one stays
            // settled while backends added by a reload are probed for the first time.
            _lastSiteSettled = settled || (active == _lastSite && _lastSiteSettled);

            _lastSite = active;
        }
    }
}
