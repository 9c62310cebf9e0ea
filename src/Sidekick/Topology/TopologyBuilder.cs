using Sidekick.Forwarding;

namespace Sidekick.Topology;

/// <summary>
/// Turns site definitions into a runtime snapshot. Backends and connection pools whose definition did not
/// change are carried over from the previous snapshot, so a reload keeps health state and counters and
/// never opens a window where everything looks down.
/// </summary>
internal sealed class TopologyBuilder(BackendTransportFactory transports, TimeProvider time)
{
    public TopologySnapshot Build(IReadOnlyList<SiteDefinition> definitions, TopologySnapshot previous)
    {
        var oldBackends = new Dictionary<(int, string, Uri, BasicCredentials?, int), Backend>();
        var oldSites = new Dictionary<(int, string, bool), Site>();
        foreach (var site in previous.Sites)
        {
            foreach (var backend in site.Backends)
            {
                oldBackends.TryAdd(Key(site.Number, backend.Definition), backend);
            }

            if (site.Backends.Length > 0)
            {
                oldSites.TryAdd((site.Number, site.Backends[0].Definition.Endpoint.Scheme, AllOnLoopback(site.Backends)), site);
            }
        }

        var sites = new Site[definitions.Count];
        for (var i = 0; i < definitions.Count; i++)
        {
            var definition = definitions[i];
            var backends = new Backend[definition.Backends.Count];
            for (var j = 0; j < backends.Length; j++)
            {
                var backendDefinition = definition.Backends[j];
                backends[j] = oldBackends.TryGetValue(Key(definition.Number, backendDefinition), out var existing)
                    ? existing
                    : new Backend(backendDefinition, definition.Number, time);
            }

            var scheme = definition.Backends.Count > 0 ? definition.Backends[0].Endpoint.Scheme : Uri.UriSchemeHttp;
            var direct = AllOnLoopback(backends);
            var invoker = oldSites.TryGetValue((definition.Number, scheme, direct), out var oldSite)
                ? oldSite.Invoker
                : transports.Create(definition.Backends.Count > 0 ? definition.Backends[0].Endpoint : new Uri("http://localhost"), definition.ServerName, direct);
            sites[i] = new Site(definition.Number, backends, invoker);
        }

        return new TopologySnapshot(sites);
    }

    /// <summary>Whether none of a site's backends can go through a proxy: its pool then never uses one.</summary>
    private static bool AllOnLoopback(IReadOnlyList<Backend> backends) => backends.All(b => b.OnLoopback);

    // The copy number too: an endpoint listed twice keeps both backends, each its own counters, across a reload.
    private static (int, string, Uri, BasicCredentials?, int) Key(int site, BackendDefinition definition) =>
        (site, definition.EndpointText, definition.ProbeUri, definition.ProbeCredentials, definition.Copy);
}
