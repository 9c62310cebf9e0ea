using Microsoft.Extensions.Primitives;
using Sidekick.Cli;
using Sidekick.Forwarding;
using Sidekick.Topology;

namespace Sidekick.Observability;

/// <summary>
/// Decides which records are printed (--trace, --errors, --status-code; filters never affect statistics)
/// and hands them to the output queue, which formats them off the request path.
/// </summary>
internal sealed class TraceSink(SidekickOptions options, ConsoleMode mode, OutputQueue output)
{
    private readonly HashSet<int> _statusCodes = [.. options.StatusCodes];

    /// <summary>False when nothing would ever be printed: callers then skip building records at all.</summary>
    public bool Enabled { get; } = mode.PrintsTraces(options.Trace);

    /// <summary>Whether records need headers (the --debug shapes).</summary>
    public bool WantsHeaders => Enabled && mode.Debug;

    public bool ShouldPrint(in TraceRecord record)
    {
        if (!Enabled || (record.IsProbe && options.Trace == "application"))
        {
            return false;
        }

        if (options.Trace == "minio" && !record.ProbeUrl.Contains(record.Path, StringComparison.Ordinal))
        {
            return false;
        }

        if (options.ErrorsOnly && record.StatusCode is < 400 or > 599)
        {
            return false;
        }

        return _statusCodes.Count == 0 || _statusCodes.Contains(record.StatusCode);
    }

    public void Write(in TraceRecord record)
    {
        if (ShouldPrint(record))
        {
            output.Enqueue(in record);
        }
    }

    public void OnProbe(Backend backend, ProbeResult result)
    {
        if (!Enabled || result.StatusCode is not { } status)
        {
            return;
        }

        var probe = backend.Definition.ProbeUri;
        Write(new TraceRecord
        {
            IsProbe = true,
            Host = backend.Name,
            Time = result.At.UtcDateTime,
            Client = "",
            StatusCode = status,
            Latency = result.Latency,
            Method = "GET",
            Path = probe.AbsolutePath,
            Query = probe.Query.TrimStart('?'),
            ProbeUrl = probe.ToString(),
        });
    }

    /// <summary>
    /// The client as upstream reports it: first X-Forwarded-For entry, else X-Real-IP, else Forwarded for=,
    /// else the peer, whose fields count only when it is a trusted proxy; the port is removed without breaking IPv6
    /// addresses, and an address longer than <see cref="MaxClientLength"/> is cut there, with <see cref="ClientCut"/>
    /// after it.
    /// </summary>
    public static string ClientOf(HttpContext context) => ClientOf(context, ClientAddressFields.Of(context.Request.Headers));

    /// <inheritdoc cref="ClientOf(HttpContext)"/>
    /// <param name="context">The request, for its peer address.</param>
    /// <param name="fields">Its client address fields, found by whoever walked its fields already.</param>
    public static string ClientOf(HttpContext context, in ClientAddressFields fields)
    {
        var (forwardedFor, realIp, forwarded) = fields;
        var peer = context.Connection.RemoteIpAddress;
        if ((forwardedFor.Count > 0 || realIp.Count > 0 || forwarded.Count > 0) && !Forwarding.TrustedProxies.Current.Trusts(peer))
        {
            // Fields from a peer not trusted (--trusted-proxies) are its own claims: the log names the peer.
            return StripPort(peer?.ToString() ?? "");
        }

        string? client = null;
        if (forwardedFor.Count > 0)
        {
            var first = forwardedFor[0]!;
            var comma = first.IndexOf(',', StringComparison.Ordinal);
            client = (comma < 0 ? first : first[..comma]).Trim();
        }
        else if (realIp.Count > 0)
        {
            client = realIp[0];
        }
        else if (forwarded.Count > 0)
        {
            foreach (var part in forwarded[0]!.Split([';', ',']))
            {
                var trimmed = part.Trim();
                if (trimmed.StartsWith("for=", StringComparison.OrdinalIgnoreCase))
                {
                    client = trimmed[4..].Trim('"');
                    break;
                }
            }
        }

        client ??= peer?.ToString() ?? "";
        client = StripPort(client);
        return client.Length <= MaxClientLength ? client : string.Concat(client.AsSpan(0, MaxClientLength), ClientCut);
    }

    /// <summary>
    /// The longest client address a trace keeps: an IPv6 address with a zone fits. The fields it comes from are the
    /// client's to choose, and a 30 KB X-Forwarded-For would otherwise be 30 KB of every line of its requests.
    /// </summary>
    public const int MaxClientLength = 64;

    /// <summary>What replaces the rest of a longer address, so a reader knows it was cut.</summary>
    public const string ClientCut = "...";

    public static IReadOnlyList<KeyValuePair<string, string[]>> Capture(IHeaderDictionary headers)
    {
        var list = new List<KeyValuePair<string, string[]>>(headers.Count);
        foreach (var (name, values) in headers)
        {
            list.Add(new(name, StringValuesToArray(values)));
        }

        return list;
    }

    private static string[] StringValuesToArray(StringValues values)
    {
        var array = new string[values.Count];
        for (var i = 0; i < array.Length; i++)
        {
            array[i] = values[i] ?? "";
        }

        return array;
    }

    private static string StripPort(string address)
    {
        if (address.StartsWith('['))
        {
            var close = address.IndexOf(']', StringComparison.Ordinal);
            return close > 0 ? address[1..close] : address;
        }

        // Exactly one colon: IPv4 or name with a port. More than one: a bare IPv6 address, kept whole.
        var colon = address.IndexOf(':', StringComparison.Ordinal);
        return colon > 0 && colon == address.LastIndexOf(':') ? address[..colon] : address;
    }
}
