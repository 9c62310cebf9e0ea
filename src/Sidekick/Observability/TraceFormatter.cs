using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.AspNetCore.WebUtilities;
using Sidekick.Cli;

namespace Sidekick.Observability;

/// <summary>
/// The upstream trace shapes (§8.3): the short text line, the --debug block, and both JSON forms. Every shape
/// prints the query, headers and error body through <see cref="SecretRedaction"/>.
/// </summary>
internal sealed class TraceFormatter(ConsoleMode mode)
{
    public static readonly JsonWriterOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Whether records print as JSON (written with <see cref="Write"/>) or as text (<see cref="Append"/>).</summary>
    public bool Json => mode.Json;

    public string Format(TraceRecord record) => mode.Json
        ? JsonString(json => Write(record, json))
        : Append(record, new StringBuilder()).ToString();

    /// <summary>The record as one JSON object, short or full (--debug), without a newline.</summary>
    public void Write(TraceRecord record, Utf8JsonWriter json)
    {
        if (mode.Debug)
        {
            WriteFullJson(json, record);
        }
        else
        {
            WriteShortJson(json, record);
        }
    }

    /// <summary>The record as text, the short line or the --debug block, without a newline.</summary>
    public StringBuilder Append(TraceRecord record, StringBuilder text) =>
        mode.Debug ? text.Append(DebugText(record)) : AppendShortText(text, record);

    public string ShortText(TraceRecord r) => AppendShortText(new StringBuilder(), r).ToString();

    /// <summary>The short line, appended to a builder the output queue reuses from line to line.</summary>
    private StringBuilder AppendShortText(StringBuilder line, TraceRecord r)
    {
        var latency = GoDuration.FormatRounded(r.Latency);
        line.Append("   LOG: ").Append(CultureInfo.InvariantCulture, $"{r.Time:HH:mm:ss.fff}").Append(" [");
        // What ConsoleMode.Paint prints, without building the status text and its painted copy as strings.
        if (mode.Colors)
        {
            line.Append("\u001b[").Append(r.StatusCode >= 400 ? "31" : "33").Append('m');
        }

        line.Append(r.StatusCode).Append(' ').Append(ReasonPhrases.GetReasonPhrase(r.StatusCode));
        if (mode.Colors)
        {
            line.Append("\u001b[0m");
        }

        line.Append("]  ").Append(r.Host).Append(' ').Append(r.Method).Append(' ').Append(r.Path);
        if (r.Query.Length > 0)
        {
            line.Append('?').Append(SecretRedaction.Query(r.Query));
        }

        line.Append(' ').Append(r.Client).Append(' ').Append(' ', Math.Max(Math.Abs(15 - r.Client.Length), 1)).Append("  ")
            .Append(latency).Append(' ', Math.Max(Math.Abs(12 - latency.Length), 1))
            .Append(" ↑ ").Append(ByteSize.FormatIec(r.Rx)).Append(" ↓ ").Append(ByteSize.FormatIec(r.Tx));
        if (r.Cache is not null)
        {
            line.Append(" cache=").Append(r.Cache);
        }

        if (r.Forwarder is { } path)
        {
            line.Append(" via=").Append(path.PathName);
            if (path.Path == Forwarding.ForwardingPath.Yarp)
            {
                line.Append('(').Append(path.ReasonText).Append(')');
            }
        }

        if (r.Error is not null)
        {
            line.Append(" error=\"").Append(r.Error).Append('"');
        }

        return line;
    }

    public static string DebugText(TraceRecord r)
    {
        var prefix = $"DEBUG: {r.Host} ";
        var text = new StringBuilder();
        void Line(string value) => text.Append(prefix).Append(value).Append('\n');
        Line($"[REQUEST] {r.Time:HH:mm:ss.fff}{(r.Forwarder is { } path ? $" [via {path.PathName}: {path.ReasonText}]" : "")}");
        Line($"{r.Method} {r.Path}{(r.Query.Length > 0 ? "?" + SecretRedaction.Query(r.Query) : "")}");
        foreach (var (name, values) in r.RequestHeaders ?? [])
        {
            Line($"{name}: {string.Concat(values.Select(v => SecretRedaction.HeaderValue(name, v)))}");
        }

        Line("<BODY>");
        Line($"[RESPONSE] [{(r.ResponseTime ?? r.Time):HH:mm:ss.fff}] [ Duration {GoDuration.FormatRounded(r.Latency)}  ↑ {ByteSize.FormatIec(r.Rx)}  ↓ {ByteSize.FormatIec(r.Tx)} ]");
        Line($"{r.StatusCode} {ReasonPhrases.GetReasonPhrase(r.StatusCode)}");
        foreach (var (name, values) in r.ResponseHeaders ?? [])
        {
            Line($"{name}: {string.Concat(values.Select(v => SecretRedaction.HeaderValue(name, v)))}");
        }

        Line(r.StatusCode < 400 || r.ResponseBody is null ? "<BODY>" : SecretRedaction.ErrorBody(r.ResponseBody));
        if (r.Error is not null)
        {
            Line($"[ERROR] {r.Error}");
        }

        text.Append(prefix);
        return text.ToString();
    }

    private static void WriteShortJson(Utf8JsonWriter json, TraceRecord r)
    {
        json.WriteStartObject();
        json.WriteString("type", "TRACE");
        json.WriteString("host", r.Host);
        json.WriteString("time", r.Time);
        json.WriteString("client", r.Client);
        WriteStats(json, "callStats", r, includeTtfb: false);
        json.WriteNumber("statusCode", r.StatusCode);
        json.WriteString("statusMsg", ReasonPhrases.GetReasonPhrase(r.StatusCode));
        json.WriteString("method", r.Method);
        json.WriteString("path", r.Path);
        json.WriteString("query", SecretRedaction.Query(r.Query));
        if (r.Cache is not null)
        {
            json.WriteString("cache", r.Cache);
        }

        WriteForwarder(json, r);
        if (r.Error is not null)
        {
            json.WriteString("error", r.Error);
        }

        json.WriteEndObject();
    }

    private static void WriteFullJson(Utf8JsonWriter json, TraceRecord r)
    {
        json.WriteStartObject();
        json.WriteString("type", "DEBUG");
        json.WriteString("nodename", r.Host);
        json.WriteStartObject("request");
        json.WriteString("time", r.Time);
        json.WriteString("method", r.Method);
        if (r.Path.Length > 0)
        {
            json.WriteString("path", r.Path);
        }

        if (r.Query.Length > 0)
        {
            json.WriteString("rawquery", SecretRedaction.Query(r.Query));
        }

        WriteHeaders(json, r.RequestHeaders);
        json.WriteString("client", r.Client);
        json.WriteEndObject();
        json.WriteStartObject("response");
        json.WriteString("time", r.ResponseTime ?? r.Time);
        WriteHeaders(json, r.ResponseHeaders);
        json.WriteString("body", r.StatusCode >= 400 && r.ResponseBody is not null ? SecretRedaction.ErrorBody(r.ResponseBody) : "");
        json.WriteNumber("statuscode", r.StatusCode);
        json.WriteEndObject();
        WriteStats(json, "stats", r, includeTtfb: true);
        WriteForwarder(json, r);
        if (r.Error is not null)
        {
            json.WriteString("error", r.Error);
        }

        json.WriteEndObject();
    }

    private static void WriteForwarder(Utf8JsonWriter json, TraceRecord r)
    {
        if (r.Forwarder is { } path)
        {
            json.WriteString("forwarder", path.PathName);
            json.WriteString("forwarderReason", path.ReasonText);
        }
    }

    private static void WriteStats(Utf8JsonWriter json, string name, TraceRecord r, bool includeTtfb)
    {
        json.WriteStartObject(name);
        json.WriteNumber("rx", r.Rx);
        json.WriteNumber("tx", r.Tx);
        json.WriteNumber("latency", r.Latency.Ticks * 100);
        json.WriteNumber("timetofirstbyte", includeTtfb ? r.TimeToFirstByte.Ticks * 100 : 0);
        json.WriteNull("healthError");
        json.WriteEndObject();
    }

    private static void WriteHeaders(Utf8JsonWriter json, IReadOnlyList<KeyValuePair<string, string[]>>? headers)
    {
        if (headers is null || headers.Count == 0)
        {
            return;
        }

        json.WriteStartObject("headers");
        foreach (var (name, values) in headers)
        {
            json.WriteStartArray(name);
            foreach (var value in values)
            {
                json.WriteStringValue(SecretRedaction.HeaderValue(name, value));
            }

            json.WriteEndArray();
        }

        json.WriteEndObject();
    }

    private static string JsonString(Action<Utf8JsonWriter> write)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, JsonOptions))
        {
            write(json);
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }
}
