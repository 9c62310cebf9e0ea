using Sidekick.Caching;
using Sidekick.Observability;

namespace Sidekick.Forwarding;

/// <summary>
/// The request path's entry: refuse ambiguous input (<see cref="RequestGuard"/>), then the cache when one is
/// configured, else straight to the <see cref="BackendExchange"/>.
/// </summary>
internal sealed class ProxyHandler(ResponseCache? cache, BackendExchange exchange, TraceSink trace, TimeProvider time)
{
    /// <summary>Entry point for every proxied request: refuse ambiguous input, then the cache (if any), then forward.</summary>
    public Task HandleAsync(HttpContext context)
    {
        if (RequestGuard.Admit(context) is { } violation)
        {
            return RequestGuard.RejectAsync(context, violation);
        }

        if (RequestGuard.AsksAboutTheServer(context))
        {
            // OPTIONS * is about this server, not a resource (RFC 9110 §9.3.7): answered here, as upstream's Go server
            // did. Forwarded, it reached the backend as "OPTIONS /" (a CORS preflight of an S3 service root).
            context.Response.ContentLength = 0;
            return Task.CompletedTask;
        }

        // Without a cache the forwarding task is returned as is: no second state machine per request.
        return cache is null ? exchange.ForwardAsync(context) : HandleWithCacheAsync(context, cache);
    }

    private async Task HandleWithCacheAsync(HttpContext context, ResponseCache cache)
    {
        var started = time.GetTimestamp();
        ServedBodyCount? served = null;
        if (trace.Enabled)
        {
            served = new ServedBodyCount();
            context.Features.Set(served);
        }

        try
        {
            await cache.HandleAsync(context, exchange);
        }
        finally
        {
            // Also a response its client left midway (the copy ends with the client's exception): it was served.
            if (served is not null && context.Response.Headers[ResponseCache.CacheHeader] is [var outcome] && outcome is "HIT" or "REVALIDATED")
            {
                TraceCacheServed(context, started, outcome, served.Bytes);
            }
        }
    }

    private void TraceCacheServed(HttpContext context, long started, string outcome, long sent)
    {
        var request = context.Request;
        trace.Write(new TraceRecord
        {
            IsProbe = false,
            Host = "cache",
            Time = time.GetUtcNow().UtcDateTime,
            Client = TraceSink.ClientOf(context),
            // What was handed to the client, not the Content-Length: a client may leave midway, a HEAD has no body.
            Tx = sent,
            Latency = time.GetElapsedTime(started),
            StatusCode = context.Response.StatusCode,
            Method = request.Method,
            Path = request.Path.Value ?? "/",
            Query = request.QueryString.HasValue ? request.QueryString.Value![1..] : "",
            ProbeUrl = "",
            Cache = outcome,
        });
    }
}
