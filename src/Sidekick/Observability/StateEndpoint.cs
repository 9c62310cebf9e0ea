using System.Text.Json;
using Sidekick.Caching;
using Sidekick.Topology;

namespace Sidekick.Observability;

/// <summary>
/// <c>/v1/state</c>: every site and backend as JSON — up or down and since when, the last probe, why it was
/// marked down, in-flight requests, ejection — which site takes traffic, and the cache store's health and last
/// error, the fills in flight, the spool they hold and the fills given up by reason. Answers "why is traffic going
/// there?", "why is the cache bypassed?" and "why was this not cached?".
/// </summary>
internal static class StateEndpoint
{
    public const string Path = "/v1/state";

    /// <param name="panicSite">The site the panic rule sends requests to (0: none).</param>
    /// <param name="waiting">Requests waiting for a backend.</param>
    /// <param name="cache">The shared cache, or null when it is off.</param>
    public static async Task WriteAsync(HttpContext context, TopologySnapshot topology, int panicSite = 0, int waiting = 0, ResponseCache? cache = null)
    {
        context.Response.ContentType = "application/json";
        await using var json = new Utf8JsonWriter(context.Response.Body, new JsonWriterOptions { Indented = true });
        var active = topology.ActiveSite?.Number;
        json.WriteStartObject();
        if (active is { } number)
        {
            json.WriteNumber("activeSite", number);
        }
        else
        {
            json.WriteNull("activeSite");
        }

        // Panic: nothing serves, and requests go to passively marked backends of this site whose probes pass.
        if (panicSite != 0)
        {
            json.WriteNumber("panicSite", panicSite);
        }
        else
        {
            json.WriteNull("panicSite");
        }

        json.WriteNumber("waitingForBackend", waiting);
        json.WriteStartArray("sites");
        foreach (var site in topology.Sites)
        {
            json.WriteStartObject();
            json.WriteNumber("site", site.Number);
            json.WriteBoolean("active", site.Number == active);
            json.WriteBoolean("panic", site.Number == panicSite);
            json.WriteStartArray("backends");
            foreach (var backend in site.Backends)
            {
                var health = backend.GetHealthSnapshot();
                json.WriteStartObject();
                json.WriteString("endpoint", backend.Name);
                json.WriteString("status", health.IsUp ? (backend.IsEjected ? "ejected" : "up") : "down");
                if (health.Since is { } since)
                {
                    json.WriteString("since", since);
                }

                // Out by the request path's judgement alone: the panic rule may still use it.
                json.WriteBoolean("passivelyOut", backend.IsPassivelyOut);
                json.WriteNumber("inFlight", backend.InFlight);
                json.WriteNumber("calls", backend.Stats.Calls);
                json.WriteNumber("failures", backend.Stats.Failures);
                json.WriteNumber("totalDowntimeSeconds", health.TotalDowntime.TotalSeconds);
                if (health.LastDownReason is { } reason)
                {
                    json.WriteString("lastDownReason", SecretRedaction.Text(reason));
                }

                if (health.LastProbe is { } probe)
                {
                    json.WriteStartObject("lastProbe");
                    json.WriteString("at", probe.At);
                    json.WriteBoolean("healthy", probe.Healthy);
                    if (probe.StatusCode is { } status)
                    {
                        json.WriteNumber("status", status);
                    }

                    json.WriteNumber("latencyMs", probe.Latency.TotalMilliseconds);
                    if (probe.Error is { } error)
                    {
                        json.WriteString("error", SecretRedaction.Text(error)); // as lastDownReason, which is the same text
                    }

                    json.WriteEndObject();
                }

                json.WriteEndObject();
            }

            json.WriteEndArray();
            json.WriteEndObject();
        }

        json.WriteEndArray();
        WriteCache(json, cache);
        json.WriteEndObject();
    }

    /// <summary>The cache store: why requests bypass it (null when SIDEKICK_CACHE_ENDPOINT is unset).</summary>
    private static void WriteCache(Utf8JsonWriter json, ResponseCache? cache)
    {
        if (cache is null)
        {
            json.WriteNull("cache");
            return;
        }

        var health = cache.Health.Snapshot();
        json.WriteStartObject("cache");
        json.WriteString("endpoint", SecretRedaction.Url(cache.Health.Endpoint));
        json.WriteString("bucket", cache.Health.Bucket);
        // The bucket's folder this sidecar's entries are in: sidecars share entries only when this is the same.
        json.WriteString("namespace", cache.Namespace);
        json.WriteBoolean("healthy", health.Healthy);
        if (health.Since is { } since)
        {
            json.WriteString("since", since);
        }

        json.WriteNumber("fillsInFlight", cache.FillsInFlight);
        // The local disk the fills in flight hold now, of what SIDEKICK_CACHE_SPOOL_SIZE allows them.
        json.WriteNumber("spoolBytes", cache.Fills.SpoolUsed);
        json.WriteNumber("spoolKeptBytes", cache.Fills.SpoolKept);
        json.WriteNumber("spoolCapacityBytes", cache.Fills.SpoolCapacity);
        // What the spool directory's file system has free: a body larger than that is refused (spool_full).
        if (cache.Fills.SpoolDiskFree is { } free)
        {
            json.WriteNumber("spoolDiskFreeBytes", free);
        }
        // Fills given up since start, by the reason of sidekick_cache_fills_abandoned_total (docs/cache.md).
        json.WriteStartObject("fillsAbandoned");
        foreach (var reason in Enum.GetValues<FillAbandonReason>())
        {
            json.WriteNumber(CacheMetrics.AbandonLabel(reason), cache.Fills.AbandonedFor(reason));
        }

        json.WriteEndObject();
        // Misses that waited for another sidecar's fill of the same entry, by how the wait ended.
        json.WriteStartObject("fillWaits");
        foreach (var outcome in Enum.GetValues<FillWaitOutcome>())
        {
            json.WriteNumber(CacheMetrics.FillWaitLabel(outcome), cache.Metrics.FillWaitsOf(outcome));
        }

        json.WriteEndObject();
        // GET answers served but not stored, by the reason of sidekick_cache_not_stored_total (docs/cache.md).
        json.WriteStartObject("notStored");
        foreach (var reason in Enum.GetValues<NotStoredReason>())
        {
            json.WriteNumber(CacheMetrics.NotStoredLabel(reason), cache.Metrics.NotStoredOf(reason));
        }

        json.WriteEndObject();
        // Stored bodies whose read from the store broke midway: resumed where it broke, finished from the origin, or cut.
        json.WriteStartObject("storeReadsBroken");
        json.WriteNumber("resumed", cache.Metrics.StoredReadsResumed);
        json.WriteNumber("fromOrigin", cache.Metrics.StoredReadsFromOrigin);
        json.WriteNumber("cut", cache.Metrics.StoredReadsCut);
        json.WriteEndObject();
        // Responses read from a fill running here that stalled for 30 s or was given up before their end: cut, or finished from the origin.
        json.WriteNumber("fillReadsCut", cache.Metrics.FillReadsCut);
        json.WriteNumber("fillReadsFromOrigin", cache.Metrics.FillReadsFromOrigin);
        json.WriteNumber("fillsContinued", cache.Metrics.FillsContinued);
        json.WriteNumber("fillsHandedOff", cache.Metrics.FillsHandedOff);
        // Stale-while-revalidate refreshes, by what the origin said of the entry.
        json.WriteStartObject("backgroundRevalidations");
        foreach (var outcome in Enum.GetValues<BackgroundOutcome>())
        {
            json.WriteNumber(outcome.ToString().ToLowerInvariant(), cache.Metrics.BackgroundRevalidationsOf(outcome));
        }

        json.WriteEndObject();
        if (health.LastError is { } error)
        {
            json.WriteStartObject("lastError");
            json.WriteString("reason", error.Label);
            json.WriteString("message", SecretRedaction.Text(error.Detail));
            if (health.LastErrorAt is { } at)
            {
                json.WriteString("at", at);
            }

            json.WriteEndObject();
        }

        json.WriteEndObject();
    }
}
