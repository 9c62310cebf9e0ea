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
    public static readonly JsonWriterOptions JsonOptions = new() { Encoder = LogJsonEncoder.Instance };

    /// <summary>Whether records print as JSON (written with <see cref="Write"/>) or as text (<see cref="Append"/>).</summary>
    public bool Json => mode.Json;

    /// <summary>Whether records print as the short JSON object (<see cref="ShortJsonLine"/> writes most of them).</summary>
    public bool ShortJson => mode.Json && !mode.Debug;

    /// <summary>Whether records print as the short text line (<see cref="ShortTextLine"/> writes most of them).</summary>
    public bool ShortTextLines => !mode.Json && !mode.Debug;

    /// <summary>Whether the short text line paints its status.</summary>
    public bool Colors => mode.Colors;

    public string Format(TraceRecord record) => mode.Json
        ? JsonString(json => Write(record, json))
        : Append(record, new StringBuilder()).ToString();

    /// <summary>The record as one JSON object, short or full (--debug), without a newline.</summary>
    public void Write(in TraceRecord record, Utf8JsonWriter json)
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
    public StringBuilder Append(in TraceRecord record, StringBuilder text) =>
        mode.Debug ? text.Append(DebugText(record)) : AppendShortText(text, record);

    public string ShortText(TraceRecord r) => AppendShortText(new StringBuilder(), r).ToString();

    /// <summary>
    /// The short line, appended to a builder the output queue reuses from line to line. Its parts are formatted into
    /// spans on the stack, not into strings of their own.
    /// </summary>
    private StringBuilder AppendShortText(StringBuilder line, in TraceRecord r)
    {
        Span<char> clock = stackalloc char[12];
        line.Append("   LOG: ").Append(Clock(r.Time, clock)).Append(" [");
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

        // Everything the request or a backend chose goes through PrintableText: one record, one line.
        line.Append("]  ").Append(PrintableText.Of(r.Host)).Append(' ').Append(PrintableText.Of(r.Method)).Append(' ').Append(PrintableText.Of(r.Path));
        if (r.Query.Length > 0)
        {
            line.Append('?').Append(PrintableText.Of(SecretRedaction.Query(r.Query)));
        }

        Span<char> latency = stackalloc char[GoDuration.MaxLength];
        latency = latency[..GoDuration.FormatRounded(r.Latency, latency)];
        Span<char> size = stackalloc char[ByteSize.MaxIecLength];
        var client = PrintableText.Of(r.Client);
        // The column is 15 wide (an IPv4 address); a longer address pushes the rest by one space, never by its length.
        line.Append(' ').Append(client).Append(' ').Append(' ', Math.Max(15 - client.Length, 1)).Append("  ")
            .Append(latency).Append(' ', Math.Max(Math.Abs(12 - latency.Length), 1))
            .Append(" ↑ ").Append(size[..ByteSize.FormatIec(r.Rx, size)])
            .Append(" ↓ ").Append(size[..ByteSize.FormatIec(r.Tx, size)]);
        if (r.Cache is not null)
        {
            line.Append(" cache=").Append(PrintableText.Of(r.Cache));
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
            line.Append(" error=\"").Append(PrintableText.Of(r.Error)).Append('"');
        }

        return line;
    }

    /// <summary><paramref name="time"/> as <c>HH:mm:ss.fff</c>, without parsing that format for every line.</summary>
    internal static ReadOnlySpan<char> Clock(DateTime time, Span<char> destination)
    {
        var ticks = time.Ticks % TimeSpan.TicksPerDay;
        Digits(destination[..2], ticks / TimeSpan.TicksPerHour);
        destination[2] = ':';
        Digits(destination.Slice(3, 2), ticks / TimeSpan.TicksPerMinute % 60);
        destination[5] = ':';
        Digits(destination.Slice(6, 2), ticks / TimeSpan.TicksPerSecond % 60);
        destination[8] = '.';
        Digits(destination.Slice(9, 3), ticks / TimeSpan.TicksPerMillisecond % 1000);
        return destination[..12];
    }

    /// <summary>Fills <paramref name="destination"/> with <paramref name="value"/>'s last digits, zero-padded.</summary>
    private static void Digits(Span<char> destination, long value)
    {
        for (var i = destination.Length - 1; i >= 0; i--, value /= 10)
        {
            destination[i] = (char)('0' + value % 10);
        }
    }

    public static string DebugText(in TraceRecord r)
    {
        var prefix = $"DEBUG: {PrintableText.Of(r.Host)} ";
        var text = new StringBuilder();
        // Each value on its own line of the block, whatever it holds (a header value, a backend's error body).
        void Line(string value) => text.Append(prefix).Append(PrintableText.Of(value)).Append('\n');
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

    private static void WriteShortJson(Utf8JsonWriter json, in TraceRecord r)
    {
        json.WriteStartObject();
        json.WriteString(JsonNames.Type, JsonNames.Trace);
        json.WriteString(JsonNames.Host, r.Host);
        json.WriteString(JsonNames.Time, r.Time);
        json.WriteString(JsonNames.Client, r.Client);
        WriteStats(json, JsonNames.CallStats, r, includeTtfb: false);
        json.WriteNumber(JsonNames.StatusCode, r.StatusCode);
        json.WriteString(JsonNames.StatusMsg, JsonNames.ReasonPhrase(r.StatusCode));
        json.WriteString(JsonNames.Method, r.Method);
        json.WriteString(JsonNames.Path, r.Path);
        json.WriteString(JsonNames.Query, SecretRedaction.Query(r.Query));
        if (r.Cache is not null)
        {
            json.WriteString(JsonNames.Cache, r.Cache);
        }

        WriteForwarder(json, r);
        if (r.Error is not null)
        {
            json.WriteString(JsonNames.Error, r.Error);
        }

        json.WriteEndObject();
    }

    private static void WriteFullJson(Utf8JsonWriter json, in TraceRecord r)
    {
        json.WriteStartObject();
        json.WriteString(JsonNames.Type, JsonNames.Debug);
        json.WriteString(JsonNames.Nodename, r.Host);
        json.WriteStartObject(JsonNames.Request);
        json.WriteString(JsonNames.Time, r.Time);
        json.WriteString(JsonNames.Method, r.Method);
        if (r.Path.Length > 0)
        {
            json.WriteString(JsonNames.Path, r.Path);
        }

        if (r.Query.Length > 0)
        {
            json.WriteString(JsonNames.Rawquery, SecretRedaction.Query(r.Query));
        }

        WriteHeaders(json, r.RequestHeaders);
        json.WriteString(JsonNames.Client, r.Client);
        json.WriteEndObject();
        json.WriteStartObject(JsonNames.Response);
        json.WriteString(JsonNames.Time, r.ResponseTime ?? r.Time);
        WriteHeaders(json, r.ResponseHeaders);
        json.WriteString(JsonNames.Body, r.StatusCode >= 400 && r.ResponseBody is not null ? SecretRedaction.ErrorBody(r.ResponseBody) : "");
        json.WriteNumber(JsonNames.Statuscode, r.StatusCode);
        json.WriteEndObject();
        WriteStats(json, JsonNames.Stats, r, includeTtfb: true);
        WriteForwarder(json, r);
        if (r.Error is not null)
        {
            json.WriteString(JsonNames.Error, r.Error);
        }

        json.WriteEndObject();
    }

    private static void WriteForwarder(Utf8JsonWriter json, in TraceRecord r)
    {
        if (r.Forwarder is { } path)
        {
            json.WriteString(JsonNames.Forwarder, path.Path == Forwarding.ForwardingPath.Http1 ? JsonNames.Http1 : JsonNames.Yarp);
            json.WriteString(JsonNames.ForwarderReason, JsonNames.Reasons[(int)path.Reason]);
        }
    }

    private static void WriteStats(Utf8JsonWriter json, JsonEncodedText name, in TraceRecord r, bool includeTtfb)
    {
        json.WriteStartObject(name);
        json.WriteNumber(JsonNames.Rx, r.Rx);
        json.WriteNumber(JsonNames.Tx, r.Tx);
        json.WriteNumber(JsonNames.Latency, r.Latency.Ticks * 100);
        json.WriteNumber(JsonNames.Timetofirstbyte, includeTtfb ? r.TimeToFirstByte.Ticks * 100 : 0);
        json.WriteNull(JsonNames.HealthError);
        json.WriteEndObject();
    }

    private static void WriteHeaders(Utf8JsonWriter json, IReadOnlyList<KeyValuePair<string, string[]>>? headers)
    {
        if (headers is null || headers.Count == 0)
        {
            return;
        }

        json.WriteStartObject(JsonNames.Headers);
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

/// <summary>
/// The JSON shapes' property names and fixed values, escaped and encoded once: written as strings, each cost an
/// escaping check and a UTF-16 to UTF-8 conversion per record (about half of a short JSON record's instructions).
/// </summary>
file static class JsonNames
{
    public static readonly JsonEncodedText Body = Encode("body");
    public static readonly JsonEncodedText Cache = Encode("cache");
    public static readonly JsonEncodedText CallStats = Encode("callStats");
    public static readonly JsonEncodedText Client = Encode("client");
    public static readonly JsonEncodedText Error = Encode("error");
    public static readonly JsonEncodedText Forwarder = Encode("forwarder");
    public static readonly JsonEncodedText ForwarderReason = Encode("forwarderReason");
    public static readonly JsonEncodedText Headers = Encode("headers");
    public static readonly JsonEncodedText HealthError = Encode("healthError");
    public static readonly JsonEncodedText Host = Encode("host");
    public static readonly JsonEncodedText Latency = Encode("latency");
    public static readonly JsonEncodedText Method = Encode("method");
    public static readonly JsonEncodedText Nodename = Encode("nodename");
    public static readonly JsonEncodedText Path = Encode("path");
    public static readonly JsonEncodedText Query = Encode("query");
    public static readonly JsonEncodedText Rawquery = Encode("rawquery");
    public static readonly JsonEncodedText Request = Encode("request");
    public static readonly JsonEncodedText Response = Encode("response");
    public static readonly JsonEncodedText Rx = Encode("rx");
    public static readonly JsonEncodedText Stats = Encode("stats");
    public static readonly JsonEncodedText StatusCode = Encode("statusCode");
    public static readonly JsonEncodedText StatusMsg = Encode("statusMsg");
    public static readonly JsonEncodedText Statuscode = Encode("statuscode");
    public static readonly JsonEncodedText Time = Encode("time");
    public static readonly JsonEncodedText Timetofirstbyte = Encode("timetofirstbyte");
    public static readonly JsonEncodedText Tx = Encode("tx");
    public static readonly JsonEncodedText Type = Encode("type");
    public static readonly JsonEncodedText Trace = Encode("TRACE");
    public static readonly JsonEncodedText Debug = Encode("DEBUG");
    public static readonly JsonEncodedText Http1 = Encode(new Forwarding.PathChoice(Forwarding.ForwardingPath.Http1, default).PathName);
    public static readonly JsonEncodedText Yarp = Encode(new Forwarding.PathChoice(Forwarding.ForwardingPath.Yarp, default).PathName);
    public static readonly JsonEncodedText[] Reasons = [.. Forwarding.PathChoice.Reasons.Select(Encode)];

    // Reason phrases of the status codes a response can have (100-599), encoded when the first JSON record is written.
    private static readonly JsonEncodedText[] Phrases = [.. Enumerable.Range(100, 500).Select(code => Encode(ReasonPhrases.GetReasonPhrase(code)))];

    public static JsonEncodedText ReasonPhrase(int status) =>
        status is >= 100 and < 600 ? Phrases[status - 100] : Encode(ReasonPhrases.GetReasonPhrase(status));

    private static JsonEncodedText Encode(string value) => JsonEncodedText.Encode(value, TraceFormatter.JsonOptions.Encoder);
}
