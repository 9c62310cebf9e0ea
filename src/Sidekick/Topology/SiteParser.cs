using System.Globalization;
using System.Net;
using Sidekick.Cli;

namespace Sidekick.Topology;

/// <summary>
/// Turns SITE arguments into site definitions: comma separated pools, range expansion, endpoint validation
/// and probe URLs. Errors are one clear line (exit 1) naming the offending value.
/// As upstream, an endpoint's path, query and user information do not reach proxied requests (they keep the
/// client's path and query): the path goes into the probe URL, the user information becomes the probes' Basic
/// credentials, and a query or fragment is dropped with a warning (upstream glued the health path into it).
/// </summary>
internal static class SiteParser
{
    /// <param name="warnings">
    /// Receives one line per SITE whose endpoints carry a query or fragment (ignored), and one per endpoint listed
    /// more than once in a SITE.
    /// </param>
    public static IReadOnlyList<SiteDefinition> Parse(
        IReadOnlyList<string> siteArgs, string programName, string healthPath, string readHealthPath, int healthPort,
        ICollection<string>? warnings = null)
    {
        var sites = new SiteDefinition[siteArgs.Count];
        for (var i = 0; i < siteArgs.Count; i++)
        {
            var number = i + 1;
            // Upstream: the last SITE is the read-only failover site and uses the read health path.
            var probePath = i == siteArgs.Count - 1 ? readHealthPath : healthPath;
            var backends = new List<BackendDefinition>();
            string? scheme = null;
            var ignored = new List<string>();
            var copies = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var endpointText in ExpandSite(siteArgs[i]))
            {
                var (endpoint, text, credentials, queryOrFragment) = ParseEndpoint(endpointText, number, programName);
                scheme ??= endpoint.Scheme;
                if (endpoint.Scheme != scheme)
                {
                    throw new FatalException($"SITE {number} mixes http and https (\"{Observability.SecretRedaction.Address(endpointText)}\"): use one scheme for all endpoints of a site");
                }

                if (queryOrFragment)
                {
                    ignored.Add(text);
                }

                var copy = copies[text] = copies.GetValueOrDefault(text) + 1;
                backends.Add(new BackendDefinition(endpoint, text, ProbeUri(endpoint, probePath, healthPort), credentials, copy));
            }

            foreach (var (text, count) in copies.Where(c => c.Value > 1))
            {
                warnings?.Add($"SITE {number}: endpoint \"{text}\" is listed {count} times: each copy is a backend of its own with its own share of the requests, as upstream; the metrics tell them apart by a copy label (copy=\"2\" and on)");
            }

            if (ignored.Count > 0)
            {
                var more = ignored.Count > 1 ? $" (and {ignored.Count - 1} more)" : "";
                warnings?.Add($"SITE {number}: the query and fragment of endpoint \"{ignored[0]}\"{more} are ignored: requests keep the client's path and query, probes use the health path");
            }

            sites[i] = new SiteDefinition(number, backends);
        }

        return sites;
    }

    /// <summary>Splits a SITE into pools and expands ranges (only when every pool has one, as upstream).</summary>
    public static IReadOnlyList<string> ExpandSite(string site)
    {
        var items = site.Split(',');
        if (!items.All(Ellipsis.HasEllipses))
        {
            // Upstream expands nothing then, and the item with a range fails as a URL: say why instead.
            if (items.FirstOrDefault(i => i.Contains('{') && i.Contains("...", StringComparison.Ordinal) && i.Contains('}')) is { } ranged &&
                items.FirstOrDefault(i => !Ellipsis.HasEllipses(i)) is { } plain)
            {
                throw new FatalException($"unable to parse input arg {Observability.SecretRedaction.Address(ranged)}: ranges are expanded only when every pool of the SITE has one (\"{Observability.SecretRedaction.Address(plain)}\" has none)");
            }

            return items;
        }

        return items.SelectMany(Ellipsis.Expand).ToArray();
    }

    /// <summary>
    /// The endpoint without user information, query and fragment; the text shown for it (the same, without a
    /// trailing '/'); its user information as credentials; whether a query or fragment was dropped.
    /// </summary>
    private static (Uri Endpoint, string Text, BasicCredentials? Credentials, bool QueryOrFragment) ParseEndpoint(string text, int site, string programName)
    {
        // Messages quote the endpoint without its user information, query or fragment (they may hold secrets).
        var shown = Observability.SecretRedaction.Address(text);
        var hint = text.StartsWith('-') ? " (flags must come before the SITE arguments)" : "";
        if (!text.Contains("://", StringComparison.Ordinal))
        {
            throw new FatalException($"missing host address \"{shown}\" in SITE {site}{hint}, expected a URL such as http://minio1:9000; see '{programName} --help'");
        }

        var schemeEnd = text.IndexOf("://", StringComparison.Ordinal);
        var scheme = text[..schemeEnd].ToLowerInvariant();
        if (scheme is not ("http" or "https"))
        {
            throw new FatalException($"unexpected scheme \"{Observability.SecretRedaction.Address(text[..schemeEnd])}\" in \"{shown}\", should be http or https");
        }

        // As Go's url.Parse: the fragment and the query are cut off first, the authority ends at the first '/'.
        var authority = text[(schemeEnd + 3)..];
        var authorityEnd = authority.AsSpan().IndexOfAny('/', '?', '#');
        authority = authorityEnd < 0 ? authority : authority[..authorityEnd];
        var at = authority.LastIndexOf('@');
        var credentials = at < 0 ? null : BasicCredentials.Parse(authority[..at]);
        authority = authority[(at + 1)..];
        string portText;
        if (authority.StartsWith('['))
        {
            var close = authority.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                throw new FatalException($"missing ']' in \"{shown}\": an IPv6 address is written in brackets, e.g. http://[::1]:9000");
            }

            portText = authority[(close + 1)..];
            if (portText.Length > 0 && portText[0] != ':')
            {
                throw new FatalException($"invalid port in \"{shown}\": expected ':' and a number in [1, 65535] after ']'");
            }
        }
        else
        {
            var colon = authority.IndexOf(':', StringComparison.Ordinal);
            portText = colon < 0 ? "" : authority[colon..];
        }

        if (portText.Length > 0 &&
            (!int.TryParse(portText.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535))
        {
            throw new FatalException($"invalid port in \"{shown}\": must be a number in [1, 65535]");
        }

        // What is left once the user information, the query and the fragment are cut out, as Go's url.Parse splits them.
        var stripped = string.Concat(text.AsSpan(0, schemeEnd + 3), text.AsSpan(schemeEnd + 3 + at + 1));
        var queryStart = stripped.AsSpan(schemeEnd + 3).IndexOfAny('?', '#');
        var queryOrFragment = queryStart >= 0;
        stripped = queryOrFragment ? stripped[..(schemeEnd + 3 + queryStart)] : stripped;
        if (!Uri.TryCreate(stripped, UriKind.Absolute, out var uri) || uri.Host.Length == 0 ||
            uri.UserInfo.Length > 0 || uri.Query.Length > 0 || uri.Fragment.Length > 0)
        {
            throw new FatalException($"missing or invalid host address in \"{shown}\" (SITE {site}); expected e.g. http://minio1:9000");
        }

        if (uri.HostNameType == UriHostNameType.Dns && !IsValidHostName(uri.Host))
        {
            throw new FatalException($"invalid host name \"{uri.Host}\" in \"{shown}\"");
        }

        return (uri, stripped.EndsWith('/') ? stripped[..^1] : stripped, credentials, queryOrFragment);
    }

    /// <summary>DNS-style labels; underscores are allowed on purpose (docker-compose service names use them).</summary>
    private static bool IsValidHostName(string host)
    {
        var name = host.EndsWith('.') ? host[..^1] : host;
        if (name.Length is 0 or > 253)
        {
            return false;
        }

        foreach (var label in name.Split('.'))
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-' ||
                !label.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Endpoint path + health path (cleaned), with the port replaced by --health-port when set.</summary>
    public static Uri ProbeUri(Uri endpoint, string healthPath, int healthPort)
    {
        var builder = new UriBuilder(endpoint) { Query = string.Empty };
        var queryStart = healthPath.IndexOf('?', StringComparison.Ordinal);
        var path = queryStart < 0 ? healthPath : healthPath[..queryStart];
        builder.Path = CleanPath(endpoint.AbsolutePath.TrimEnd('/') + (path.StartsWith('/') ? path : "/" + path));
        if (queryStart >= 0)
        {
            builder.Query = healthPath[(queryStart + 1)..];
        }

        if (healthPort != 0)
        {
            builder.Port = healthPort;
        }

        return builder.Uri;
    }

    private static string CleanPath(string path)
    {
        var trailing = path.Length > 1 && path.EndsWith('/');
        var parts = new List<string>();
        foreach (var part in path.Split('/'))
        {
            if (part is "" or ".")
            {
                continue;
            }

            if (part == "..")
            {
                if (parts.Count > 0)
                {
                    parts.RemoveAt(parts.Count - 1);
                }

                continue;
            }

            parts.Add(part);
        }

        var cleaned = "/" + string.Join('/', parts);
        return trailing && cleaned != "/" ? cleaned + "/" : cleaned;
    }
}
