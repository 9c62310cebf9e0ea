using Sidekick.Topology;

namespace Sidekick.Caching;

/// <summary>What the cache needs from the proxy: the normal forwarding path and a healthy backend to ask.</summary>
internal interface ICacheOrigin
{
    /// <summary>Proxies the request as if there were no cache (retries, failover, statistics, traces).</summary>
    Task ForwardAsync(HttpContext context);

    /// <summary>A serving backend of the active site and its connection pool, or null when none is up.</summary>
    (Site Site, Backend Backend)? Pick();

    /// <summary>Passive health: the backend failed at the transport level.</summary>
    void ReportTransportFailure(Backend backend, string reason);
}
