using Sidekick.Forwarding;

namespace Sidekick.Caching;

/// <summary>What the cache needs from the proxy: the one path to the backends.</summary>
internal interface ICacheOrigin
{
    /// <summary>
    /// Proxies the request as if there were no cache (retries, failover, statistics, outliers, traces);
    /// <paramref name="observer"/> sees the response head and body and may take the response over.
    /// </summary>
    Task ForwardAsync(HttpContext context, IExchangeObserver? observer = null);
}
