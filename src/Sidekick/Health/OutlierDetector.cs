using Sidekick.Topology;

namespace Sidekick.Health;

/// <summary>
/// Ejects a backend that answers with a run of gateway errors (502/503/504) even though its transport
/// works, for a back-off that grows with each ejection. At most a configured share of a site is ejected at
/// once, so cluster-wide throttling (MinIO's 503 SlowDown) cannot empty a site.
/// </summary>
internal sealed class OutlierDetector(OutlierOptions options, TopologyStore topology)
{
    public event Action<Backend, TimeSpan>? Ejected;

    public void OnResponse(Backend backend, int statusCode)
    {
        if (options.ConsecutiveGatewayErrors <= 0)
        {
            return;
        }

        var gatewayError = statusCode is 502 or 503 or 504;
        if (backend.RecordGatewayOutcome(gatewayError) < options.ConsecutiveGatewayErrors || backend.IsEjected)
        {
            return;
        }

        var site = FindSite(backend);
        if (site is null)
        {
            return;
        }

        var ejected = 0;
        foreach (var member in site.Backends)
        {
            ejected += member.IsEjected ? 1 : 0;
        }

        // Ejecting this one must keep the site's ejected share within the limit.
        if ((ejected + 1) * 100 > site.Backends.Length * options.MaxEjectionPercent)
        {
            return;
        }

        var duration = backend.Eject(options.BaseEjectionTime, options.MaxEjectionTime);
        Ejected?.Invoke(backend, duration);
    }

    private Site? FindSite(Backend backend)
    {
        foreach (var site in topology.Current.Sites)
        {
            if (site.Number == backend.SiteNumber)
            {
                return site;
            }
        }

        return null;
    }
}

internal sealed record OutlierOptions(
    int ConsecutiveGatewayErrors,
    TimeSpan BaseEjectionTime,
    TimeSpan MaxEjectionTime,
    int MaxEjectionPercent);
