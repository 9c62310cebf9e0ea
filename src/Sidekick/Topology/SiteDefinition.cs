namespace Sidekick.Topology;

/// <summary>
/// One SITE as the command line describes it. <paramref name="ServerName"/> is the TLS name for its
/// backends when they are addressed by IP (round-robin DNS mode); null means each endpoint's own host.
/// </summary>
internal sealed record SiteDefinition(int Number, IReadOnlyList<BackendDefinition> Backends, string? ServerName = null);

/// <summary>
/// One backend: its URL, the text shown for it (logs, metrics), and the URL its probes go to. None of them holds
/// the endpoint's user information (<c>http://user:password@host</c>): that is <paramref name="ProbeCredentials"/>,
/// sent by the probes only (as Go's client does for a URL with a user), never by proxied requests, never shown.
/// <paramref name="Copy"/> numbers the times one endpoint is listed in its SITE (upstream takes each as a backend of
/// its own, with its own share of the requests): 1 for the first, so that metrics and reloads tell the copies apart.
/// </summary>
internal sealed record BackendDefinition(Uri Endpoint, string EndpointText, Uri ProbeUri, BasicCredentials? ProbeCredentials = null, int Copy = 1);
