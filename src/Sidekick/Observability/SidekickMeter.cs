using System.Diagnostics.Metrics;
using Sidekick.Forwarding;
using Sidekick.Topology;

namespace Sidekick.Observability;

/// <summary>
/// The same counters through System.Diagnostics.Metrics (meter "Sidekick"), so dotnet-counters and
/// OpenTelemetry see them. Observable instruments read the backend counters when a listener asks.
/// </summary>
internal sealed class SidekickMeter : IDisposable
{
    private readonly Meter _meter = new("Sidekick");

    public SidekickMeter(TopologyStore topology, SiteWatch sites, RetryPolicy retries)
    {
        IEnumerable<Measurement<long>> PerBackend(Func<Backend, long> value) =>
            topology.Current.AllBackends.Select(b => new Measurement<long>(value(b), Tags(b)));

        _meter.CreateObservableCounter("sidekick.requests", () => PerBackend(b => b.Stats.Calls), description: "Proxied requests per backend (probes not included)");
        _meter.CreateObservableCounter("sidekick.errors", () => PerBackend(b => b.Stats.Failures), description: "Proxied requests answered with status >= 400");
        _meter.CreateObservableCounter("sidekick.rx", () => PerBackend(b => b.Stats.RxBytes), unit: "By");
        _meter.CreateObservableCounter("sidekick.tx", () => PerBackend(b => b.Stats.TxBytes), unit: "By");
        _meter.CreateObservableCounter("sidekick.health.errors", () => PerBackend(b => b.Stats.HealthErrors));
        _meter.CreateObservableUpDownCounter("sidekick.in_flight", () => PerBackend(b => b.InFlight));
        _meter.CreateObservableGauge("sidekick.backend.up", () => PerBackend(b => b.IsServing ? 1 : 0));
        _meter.CreateObservableGauge("sidekick.site.active", () => (long)sites.ActiveSiteNumber, description: "Number of the site taking traffic (0 = none)");
        _meter.CreateObservableCounter("sidekick.failovers", () => sites.Failovers);
        _meter.CreateObservableCounter("sidekick.retries", () => retries.Count.Value);
        _meter.CreateObservableCounter("sidekick.replay.unbuffered", () => retries.ReplayBudget.Unbuffered, description: "Idempotent request bodies within --max-replay-size streamed unbuffered because the replay budget was in use");
        Duration = _meter.CreateHistogram<double>("sidekick.request.duration", unit: "s", description: "Duration of proxied requests");
    }

    // As the Prometheus labels: an endpoint listed twice in its SITE is two backends, told apart by a copy tag.
    private static KeyValuePair<string, object?>[] Tags(Backend backend) => backend.Definition.Copy == 1
        ? [new("endpoint", backend.Name)]
        : [new("endpoint", backend.Name), new("copy", backend.Definition.Copy)];

    /// <summary>Recorded only while a listener is attached (check <see cref="Instrument.Enabled"/> first).</summary>
    public Histogram<double> Duration { get; }

    public void Dispose() => _meter.Dispose();
}
