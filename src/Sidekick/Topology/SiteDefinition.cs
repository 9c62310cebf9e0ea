namespace Sidekick.Topology;

// Placeholder until the SITE parser lands; the parser branch owns this file.
internal sealed record SiteDefinition(int Number, IReadOnlyList<BackendDefinition> Backends);

internal sealed record BackendDefinition(Uri Endpoint, string EndpointText, Uri ProbeUri);
