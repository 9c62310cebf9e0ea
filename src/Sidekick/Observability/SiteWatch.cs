using Sidekick.Topology;

namespace Sidekick.Observability;

/// <summary>
/// Follows which site takes traffic and counts failovers (every change of the active site while one was
/// active before). Driven by backend transitions, never by requests.
/// </summary>
internal sealed class SiteWatch(TopologyStore topology)
{
    private readonly Lock _gate = new();
    private int _activeSite;
    private long _failovers;

    public long Failovers => Volatile.Read(ref _failovers);

    public int ActiveSiteNumber => Volatile.Read(ref _activeSite);

    public void Refresh()
    {
        var active = topology.Current.ActiveSite?.Number ?? 0;
        lock (_gate)
        {
            if (active == _activeSite)
            {
                return;
            }

            if (_activeSite != 0)
            {
                _failovers++;
            }

            Volatile.Write(ref _activeSite, active);
        }
    }
}
