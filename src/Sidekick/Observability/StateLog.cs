using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Sidekick.Caching;
using Sidekick.Cli;
using Sidekick.Networking;
using Sidekick.Topology;

namespace Sidekick.Observability;

/// <summary>
/// Prints one line per backend up/down transition (--log), as text or JSON (upstream §8.2), one per change of the
/// cache store's state, the panic rule's, and client connections cut by --client-send-timeout. A backend that is unreachable from the start is reported down once. A
/// reason names the probe URL, so it is printed through <see cref="SecretRedaction"/>.
/// </summary>
internal sealed class StateLog(ConsoleMode mode, OutputQueue output)
{
    public void OnTransition(Backend backend, BackendTransition transition) => output.Enqueue(Format(backend, transition));

    public void OnCacheTransition(CacheHealth store, CacheHealthTransition transition) =>
        output.Enqueue(Format(store.Endpoint, store.Bucket, transition));

    /// <summary>
    /// The cache store's line: "cache store URL bucket B unreachable: connection refused", "… is healthy again",
    /// or with --json <c>{"Type":"LOG","Cache":URL,"Bucket":B,"Status":"unhealthy","Reason":"unreachable","Error":…}</c>.
    /// </summary>
    public string Format(Uri endpoint, string bucket, CacheHealthTransition transition)
    {
        var store = SecretRedaction.Url(endpoint);
        var detail = transition.Failure is { } failure ? SecretRedaction.Text(failure.Detail) : null;
        if (mode.Json)
        {
            return JsonLine(json =>
            {
                json.WriteStartObject();
                json.WriteString("Type", "LOG");
                json.WriteString("Cache", store);
                json.WriteString("Bucket", bucket);
                json.WriteString("Status", transition.Healthy ? "healthy" : "unhealthy");
                if (transition.Failure is { } reason)
                {
                    json.WriteString("Reason", reason.Label);
                    json.WriteString("Error", detail);
                }

                if (transition.Downtime is { } downtime && downtime > TimeSpan.Zero)
                {
                    json.WriteNumber("Downtime", downtime.Ticks * 100);
                }

                json.WriteString("Timestamp", transition.At.UtcDateTime);
                json.WriteEndObject();
            });
        }

        var line = TextLine(transition.At).Append("cache store ").Append(store).Append(" bucket ").Append(bucket);
        if (transition.Failure is { } failed)
        {
            line.Append(' ').Append(failed.Words).Append(": ").Append(PrintableText.Of(detail ?? ""));
        }
        else
        {
            line.Append(transition.Again ? " is healthy again" : " is healthy");
            if (transition.Downtime is { } downtime)
            {
                line.Append(" Downtime duration: ").Append(GoDuration.FormatRounded(downtime));
            }
        }

        return line.ToString();
    }

    /// <summary>A cache fill was given up: which request, why, and what happened.</summary>
    public void OnFillAbandoned(string target, string reason, string detail, DateTimeOffset at) =>
        EventLine($"cache fill of {target} abandoned ({reason}): {detail}", "cache-fill-abandoned", at, json =>
        {
            json.WriteString("Target", target);
            json.WriteString("Reason", reason);
        });

    /// <summary>A fill's client left while requests read its spool: the rest is fetched from the origin without it.</summary>
    public void OnFillContinued(string target, long from, long length, DateTimeOffset at) =>
        EventLine($"cache fill of {target} continued without its client: it left after {from} of {length} bytes while requests were reading the fill; the rest is asked of the origin",
            "cache-fill-continued", at, json =>
            {
                json.WriteString("Target", target);
                json.WriteNumber("Offset", from);
            });

    /// <summary>A fill's client held it back while requests waited for it: the rest is fetched from the origin for the fill.</summary>
    public void OnFillHandedOff(string target, long from, long length, DateTimeOffset at) =>
        EventLine($"cache fill of {target} handed off from its client after {from} of {length} bytes: the client took the body slower than the origin sent it while requests waited for the fill; the rest is asked of the origin for the fill, and the client goes on at its own pace",
            "cache-fill-handed-off", at, json =>
            {
                json.WriteString("Target", target);
                json.WriteNumber("Offset", from);
            });

    /// <summary>An answer served and not stored, for a reason an operator can act on (rate-limited by the cache).</summary>
    public void OnNotStored(string target, string reason, string detail, DateTimeOffset at) =>
        EventLine($"cache did not store {target} ({reason}): {detail}", "cache-not-stored", at, json =>
        {
            json.WriteString("Target", target);
            json.WriteString("Reason", reason);
        });

    /// <summary>
    /// Another sidecar's lease write replaced this one's at the same moment (a store that ignores If-None-Match), after
    /// the origin's answer was already on its way here: fetched twice from the origin, stored by the other sidecar.
    /// </summary>
    public void OnFetchedTwice(string target, DateTimeOffset at) =>
        EventLine($"cache fill of {target} left to another sidecar: its lease write replaced this one at the same moment " +
            "(the store ignores If-None-Match) after the origin's answer was already coming here, so the object was fetched from the origin twice",
            "cache-fill-fetched-twice", at, json => json.WriteString("Target", target));

    /// <summary>A body's read from the store or a fill broke midway: resumed from the store, finished from the origin, or the client's response cut.</summary>
    public void OnStoredReadBroken(string key, long offset, Caching.BrokenRead outcome, string detail, DateTimeOffset at) =>
        EventLine($"cache read of stored entry {key} broke at byte {offset} ({detail}): " + outcome switch
        {
            Caching.BrokenRead.Resumed => "resumed from the store",
            Caching.BrokenRead.FromOrigin => "the rest came from the origin",
            _ => "the client's response was cut",
        }, outcome switch
        {
            Caching.BrokenRead.Resumed => "cache-read-resumed",
            Caching.BrokenRead.FromOrigin => "cache-read-from-origin",
            _ => "cache-read-cut",
        }, at, json =>
            {
                json.WriteString("Key", key);
                json.WriteNumber("Offset", offset);
            });

    /// <summary>A stored entry's object did not hold the body its metadata describes: the entry was evicted.</summary>
    public void OnFaultyEntryEvicted(string key, string detail, DateTimeOffset at) =>
        EventLine($"cache entry {key} evicted: {detail}", "cache-entry-faulty", at, json => json.WriteString("Key", key));

    /// <summary>One event: a text line, or a JSON LOG object with its own fields between Status and Message.</summary>
    private void EventLine(string message, string status, DateTimeOffset at, Action<Utf8JsonWriter> fields)
    {
        if (mode.Json)
        {
            output.Enqueue(JsonLine(json =>
            {
                json.WriteStartObject();
                json.WriteString("Type", "LOG");
                json.WriteString("Status", status);
                fields(json);
                json.WriteString("Message", SecretRedaction.Text(message));
                json.WriteString("Timestamp", at.UtcDateTime);
                json.WriteEndObject();
            }));
            return;
        }

        // A message can quote the origin or the store (an error's text): one event, one line.
        output.Enqueue(TextLine(at).Append(PrintableText.Of(SecretRedaction.Text(message))).ToString());
    }

    /// <summary>A client connection closed because the client took no response bytes for the send timeout.</summary>
    public void OnClientSendTimeout(EndPoint? client, TimeSpan timeout, DateTimeOffset at) =>
        EventLine($"client {client} took no response bytes for {GoDuration.Format(timeout)}: its connection was closed (--client-send-timeout)",
            "client-send-timeout", at, json => json.WriteString("Client", client?.ToString()));

    /// <summary>
    /// sidekick could not have a socket (out of descriptors or socket memory); at most one line per
    /// <see cref="LocalShortage.LinePeriod"/>, with the count of those met since the last line.
    /// </summary>
    public void OnShortage(ShortageSite site, SocketError error, long more, DateTimeOffset at)
    {
        var what = site switch
        {
            ShortageSite.Accept => "new client connections wait in the kernel's queue while accept retries (every 5 ms, backing off to 1 s)",
            ShortageSite.Backend => "a request was answered 503 SlowDown, and no backend was marked down",
            _ => "a health probe was not sent, and its backend keeps its state",
        };
        var since = more > 0 ? $" ({more} more since the last such line)" : "";
        var remedy = error == SocketError.TooManyOpenSockets
            ? "raise the open-files limit (ulimit -n, systemd LimitNOFILE) or lower --max-connections"
            : "the host is short of kernel memory";
        EventLine($"sidekick is {LocalShortage.Describe(error)}: {what}{since}; {remedy}",
            "socket-shortage", at, json =>
            {
                json.WriteString("During", LocalShortage.Label(site));
                json.WriteNumber("More", more);
            });
    }

    /// <summary>Panic began on <paramref name="site"/> (0: it ended).</summary>
    public void OnPanic(int site, DateTimeOffset at) => output.Enqueue(FormatPanic(site, at));

    public string FormatPanic(int site, DateTimeOffset at)
    {
        var message = site == 0
            ? "panic over: a backend serves again"
            : $"panic: no backend serves; site {site} keeps taking requests on its passively marked backends, whose probes pass";
        if (mode.Json)
        {
            return JsonLine(json =>
            {
                json.WriteStartObject();
                json.WriteString("Type", "LOG");
                json.WriteString("Status", site == 0 ? "panic-over" : "panic");
                json.WriteNumber("Site", site);
                json.WriteString("Message", message);
                json.WriteString("Timestamp", at.UtcDateTime);
                json.WriteEndObject();
            });
        }

        return TextLine(at).Append(message).ToString();
    }

    public string Format(Backend backend, BackendTransition transition)
    {
        if (mode.Json)
        {
            return JsonLine(json =>
            {
                json.WriteStartObject();
                json.WriteString("Type", "LOG");
                json.WriteString("Endpoint", backend.Name);
                if (transition.Reason is { } reason)
                {
                    json.WriteString("Error", SecretRedaction.Text(reason));
                }

                json.WriteString("Status", transition.IsUp ? "up" : "down");
                if (transition.Downtime is { } downtime && downtime > TimeSpan.Zero)
                {
                    json.WriteNumber("Downtime", downtime.Ticks * 100);
                }

                json.WriteString("Timestamp", transition.At.UtcDateTime);
                json.WriteEndObject();
            });
        }

        var line = TextLine(transition.At).Append(backend.Name);
        if (transition.IsUp)
        {
            line.Append(" is up");
            if (transition.Downtime is { } downtime)
            {
                line.Append(" Downtime duration: ").Append(GoDuration.FormatRounded(downtime));
            }
        }
        else
        {
            line.Append(" is down: ").Append(transition.Reason is { } reason ? PrintableText.Of(SecretRedaction.Text(reason)) : null);
        }

        return line.ToString();
    }

    /// <summary>A LOG line as text: the coloured tag and the time, then what the caller appends.</summary>
    private StringBuilder TextLine(DateTimeOffset at) =>
        new StringBuilder().Append(mode.Paint("LOG", "35")).Append("  : ")
            .Append(at.UtcDateTime.ToString("HH:mm:ss.fff", System.Globalization.CultureInfo.InvariantCulture)).Append("  ");

    /// <summary>A LOG line as one JSON object written by <paramref name="write"/>.</summary>
    private static string JsonLine(Action<Utf8JsonWriter> write)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            write(json);
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }
}
