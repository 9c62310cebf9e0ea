using System.Globalization;
using System.Text;
using Sidekick.Forwarding;
using Sidekick.Topology;

namespace Sidekick.Observability;

/// <summary>
/// Writes the Prometheus text exposition (format 0.0.4) by hand: upstream's five counters for the backends of
/// every site, plus what operators need (durations, in-flight, up, active site, probe failures, failovers,
/// retries, the build). Read from the counters on demand; nothing is computed on the request path.
/// </summary>
internal sealed class PrometheusExporter(
    TopologyStore topology, SiteWatch sites, RetryPolicy retries, Func<long> ejections, Func<long> droppedTraces, Func<PathReason, long> forwarded,
    Caching.ResponseCache? cache = null, Routing.PanicRule? panic = null, Routing.BackendWait? waits = null, Func<long>? sendTimeouts = null,
    Networking.LocalShortage? shortage = null)
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    public string Render()
    {
        var backends = topology.Current.AllBackends.ToArray();
        var text = new StringBuilder();
        Counter(text, "sidekick_requests_total", "Total number of calls in current SideKick server instance", backends, b => b.Stats.Calls);
        Counter(text, "sidekick_errors_total", "Total number of failed calls in current SideKick server instance", backends, b => b.Stats.Failures);
        Counter(text, "sidekick_rx_bytes_total", "Total number of bytes received by current SideKick server instance", backends, b => b.Stats.RxBytes);
        Counter(text, "sidekick_tx_bytes_total", "Total number of bytes sent by current SideKick server instance", backends, b => b.Stats.TxBytes);
        // Upstream's name lacks the _total suffix that counters need; keep it (dashboards use it) as untyped,
        // and publish the same value under a proper counter name.
        Header(text, "sidekick_health_error_counts", "Total number of health check errors", "untyped");
        foreach (var backend in backends)
        {
            Sample(text, "sidekick_health_error_counts", backend, backend.Stats.HealthErrors);
        }

        Counter(text, "sidekick_health_errors_total", "Total number of health check errors", backends, b => b.Stats.HealthErrors);

        // Requests by status class: alert on 5xx without the routine 4xx of S3 (404 on a missing key) that
        // upstream's errors_total counts.
        Header(text, "sidekick_responses_total", "Proxied requests by the status class of their response", "counter");
        foreach (var backend in backends)
        {
            for (var statusClass = 1; statusClass <= 5; statusClass++)
            {
                text.Append("sidekick_responses_total{").Append(Labels(backend)).Append(",class=\"").Append(statusClass).Append("xx\"} ")
                    .Append(backend.Stats.Responses(statusClass)).Append('\n');
            }
        }

        // Probes apart from proxied requests (upstream counted them in requests_total).
        Header(text, "sidekick_probes_total", "Health probes by result (success: answered 200)", "counter");
        foreach (var backend in backends)
        {
            text.Append("sidekick_probes_total{").Append(Labels(backend)).Append(",result=\"success\"} ").Append(backend.Stats.HealthyProbes).Append('\n');
            text.Append("sidekick_probes_total{").Append(Labels(backend)).Append(",result=\"failure\"} ").Append(backend.Stats.HealthErrors).Append('\n');
        }

        Header(text, "sidekick_request_duration_seconds", "Duration of proxied requests per backend", "histogram");
        foreach (var backend in backends)
        {
            var counts = backend.Stats.DurationCounts();
            long cumulative = 0;
            for (var i = 0; i < BackendStats.DurationBuckets.Length; i++)
            {
                cumulative += counts[i];
                text.Append("sidekick_request_duration_seconds_bucket{").Append(Labels(backend)).Append(",le=\"")
                    .Append(BackendStats.DurationBuckets[i].ToString(CultureInfo.InvariantCulture)).Append("\"} ").Append(cumulative).Append('\n');
            }

            cumulative += counts[^1];
            text.Append("sidekick_request_duration_seconds_bucket{").Append(Labels(backend)).Append(",le=\"+Inf\"} ").Append(cumulative).Append('\n');
            text.Append("sidekick_request_duration_seconds_sum{").Append(Labels(backend)).Append("} ")
                .Append(backend.Stats.DurationSum.TotalSeconds.ToString("0.######", CultureInfo.InvariantCulture)).Append('\n');
            text.Append("sidekick_request_duration_seconds_count{").Append(Labels(backend)).Append("} ").Append(cumulative).Append('\n');
        }

        Header(text, "sidekick_backend_in_flight", "Requests in flight per backend", "gauge");
        foreach (var backend in backends)
        {
            Sample(text, "sidekick_backend_in_flight", backend, backend.InFlight);
        }

        Header(text, "sidekick_backend_up", "1 when the backend takes traffic (up and not ejected), else 0", "gauge");
        foreach (var backend in backends)
        {
            Sample(text, "sidekick_backend_up", backend, backend.IsServing ? 1 : 0);
        }

        Header(text, "sidekick_site_active", "1 for the site that takes traffic, else 0", "gauge");
        var active = topology.Current.ActiveSite?.Number ?? 0;
        foreach (var site in topology.Current.Sites)
        {
            text.Append("sidekick_site_active{site=\"").Append(site.Number).Append("\"} ").Append(site.Number == active ? 1 : 0).Append('\n');
        }

        Header(text, "sidekick_probe_failures_total", "Failed health probes by reason", "counter");
        foreach (var backend in backends)
        {
            foreach (var kind in Enum.GetValues<ProbeFailureKind>())
            {
                text.Append("sidekick_probe_failures_total{").Append(Labels(backend)).Append(",reason=\"")
                    .Append(kind.ToString().ToLowerInvariant()).Append("\"} ").Append(backend.Stats.ProbeFailures(kind)).Append('\n');
            }
        }

        Header(text, "sidekick_forwarded_total", "Forwarding attempts by path (http1: sidekick's own, yarp) and the reason for it", "counter");
        foreach (var reason in Enum.GetValues<PathReason>())
        {
            text.Append("sidekick_forwarded_total{path=\"").Append(reason == PathReason.Plain ? "http1" : "yarp").Append("\",reason=\"")
                .Append(PathChoice.Reasons[(int)reason]).Append("\"} ").Append(forwarded(reason)).Append('\n');
        }

        Single(text, "sidekick_failovers_total", "Times traffic moved from one site to another", sites.Failovers);
        Single(text, "sidekick_retries_total", "Requests retried on another backend", retries.Count.Value);
        Single(text, "sidekick_replay_unbuffered_total", "Idempotent request bodies within --max-replay-size streamed unbuffered (never replayed) because the replay budget was in use", retries.ReplayBudget.Unbuffered);
        Header(text, "sidekick_download_resumes_total", "GETs cut mid-body and continued from another backend, by outcome", "counter");
        foreach (var outcome in Enum.GetValues<ResumeOutcome>())
        {
            text.Append("sidekick_download_resumes_total{outcome=\"").Append(ResumeOutcomeLabel(outcome)).Append("\"} ")
                .Append(retries.Resumes.Of(outcome)).Append('\n');
        }

        Single(text, "sidekick_outlier_ejections_total", "Backends ejected for consecutive gateway errors", ejections());
        Single(text, "sidekick_client_send_timeouts_total", "Client connections closed because they took no response bytes for --client-send-timeout", sendTimeouts?.Invoke() ?? 0);
        if (shortage is not null)
        {
            Header(text, "sidekick_socket_shortages_total",
                "Sockets sidekick could not have because it was out of file descriptors or socket memory, by what wanted one (accept: a client waited; backend: a request was answered 503; probe: not sent)", "counter");
            foreach (var site in Enum.GetValues<Networking.ShortageSite>())
            {
                text.Append("sidekick_socket_shortages_total{during=\"").Append(Networking.LocalShortage.Label(site)).Append("\"} ")
                    .Append(shortage.Count(site)).Append('\n');
            }
        }

        Single(text, "sidekick_trace_dropped_total", "Trace and log lines dropped because the console was too slow or could not be written to", droppedTraces());
        if (panic is not null)
        {
            Single(text, "sidekick_panic_requests_total", "Requests sent to passively marked backends because no backend served (panic rule)", panic.Requests);
            Header(text, "sidekick_panic_site", "The site the panic rule sends requests to, 0 when none", "gauge");
            text.Append("sidekick_panic_site ").Append(panic.Site).Append('\n');
        }

        if (waits is not null)
        {
            Header(text, "sidekick_backend_waits_total", "Requests that waited for a backend because none served, by how the wait ended", "counter");
            text.Append("sidekick_backend_waits_total{outcome=\"served\"} ").Append(waits.Served).Append('\n');
            text.Append("sidekick_backend_waits_total{outcome=\"timeout\"} ").Append(waits.TimedOut).Append('\n');
            text.Append("sidekick_backend_waits_total{outcome=\"rejected\"} ").Append(waits.Rejected).Append('\n');
            text.Append("sidekick_backend_waits_total{outcome=\"abandoned\"} ").Append(waits.Abandoned).Append('\n');
            Header(text, "sidekick_backend_waiting", "Requests waiting for a backend now", "gauge");
            text.Append("sidekick_backend_waiting ").Append(waits.Waiting).Append('\n');
        }

        if (cache is not null)
        {
            cache.Metrics.WriteTo(text, cache.Health.Online, cache.FillsInFlight, cache.Fills);
            // Sidecars share entries only within one bucket folder: a dashboard can group them by it.
            Header(text, "sidekick_cache_info", "The cache's bucket and the folder its entries are in (SIDEKICK_CACHE_NAMESPACE); always 1", "gauge");
            text.Append("sidekick_cache_info{bucket=\"").Append(Escape(cache.Health.Bucket)).Append("\",namespace=\"").Append(Escape(cache.Namespace)).Append("\"} 1\n");
        }

        ProcessMetrics.WriteTo(text);
        // The usual *_build_info shape: always 1, the facts in the labels, so a query can join them onto any series.
        var build = BuildInfo.Current;
        Header(text, "sidekick_build_info", "Version, commit and .NET runtime of this sidekick; always 1", "gauge");
        text.Append("sidekick_build_info{version=\"").Append(Escape(build.Version)).Append("\",commit=\"").Append(Escape(build.Commit))
            .Append("\",runtime=\"").Append(Escape(build.Runtime)).Append("\"} 1\n");
        return text.ToString();
    }

    private static string ResumeOutcomeLabel(ResumeOutcome outcome) => outcome switch
    {
        ResumeOutcome.Completed => "completed",
        ResumeOutcome.ValidatorMismatch => "validator_mismatch",
        ResumeOutcome.Refused => "refused",
        ResumeOutcome.NoBackend => "no_backend",
        _ => "failed",
    };

    private static void Counter(StringBuilder text, string name, string help, Backend[] backends, Func<Backend, long> value)
    {
        Header(text, name, help, "counter");
        foreach (var backend in backends)
        {
            Sample(text, name, backend, value(backend));
        }
    }

    private static void Single(StringBuilder text, string name, string help, long value)
    {
        Header(text, name, help, "counter");
        text.Append(name).Append(' ').Append(value).Append('\n');
    }

    private static void Header(StringBuilder text, string name, string help, string type) =>
        text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n')
            .Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

    private static void Sample(StringBuilder text, string name, Backend backend, long value) =>
        text.Append(name).Append('{').Append(Labels(backend)).Append("} ").Append(value).Append('\n');

    /// <summary>endpoint and site: the same endpoint may appear in two sites, and series must stay unique.</summary>
    // An endpoint listed twice in its SITE is two backends: the second and later carry a copy label, so that no two
    // series are the same (Prometheus keeps one sample of a duplicate and drops the other's counts).
    private static string Labels(Backend backend) => backend.Definition.Copy == 1
        ? $"endpoint=\"{Escape(backend.Name)}\",site=\"{backend.SiteNumber}\""
        : $"endpoint=\"{Escape(backend.Name)}\",site=\"{backend.SiteNumber}\",copy=\"{backend.Definition.Copy}\"";

    private static string Escape(string value) =>
        value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}
