using System.Buffers;
using System.Globalization;
using Microsoft.AspNetCore.WebUtilities;

namespace Sidekick.Observability;

/// <summary>
/// The short JSON trace shape of a proxied request, written byte by byte when every text in it is printable ASCII
/// without a quote or a backslash, as nearly every request's is: the same bytes <see cref="TraceFormatter"/>
/// writes through <see cref="System.Text.Json.Utf8JsonWriter"/> (with UnsafeRelaxedJsonEscaping those are the
/// only ASCII characters it escapes), at about a third of its instructions, which checked every value for
/// escaping and every call for the object's state. Anything else (a name or path with other characters, a time
/// that is not UTC) is left to the writer.
/// </summary>
internal static class ShortJsonLine
{
    // "yyyy-MM-ddTHH:mm:ss.fffffffZ", the round-trip format of a UTC time.
    private const int RoundTripLength = 28;

    // More than the names, punctuation, time and numbers of the longest shape take (about 350 bytes).
    private const int FixedLength = 512;

    /// <summary>Writes <paramref name="r"/> as one JSON object (no newline); false, with nothing written, when it cannot.</summary>
    public static bool TryWrite(in TraceRecord r, IBufferWriter<byte> output)
    {
        if (r.Time.Kind != DateTimeKind.Utc)
        {
            return false;
        }

        var query = SecretRedaction.Query(r.Query);
        var phrase = ReasonPhrases.GetReasonPhrase(r.StatusCode);
        var forwarder = r.Forwarder is { } path ? path.PathName : null;
        var reason = r.Forwarder is { } chosen ? chosen.ReasonText : null;
        var line = new Utf8Line(output.GetSpan(FixedLength + r.Host.Length + r.Client.Length + phrase.Length + r.Method.Length + r.Path.Length +
            query.Length + (r.Cache?.Length ?? 0) + (forwarder?.Length ?? 0) + (reason?.Length ?? 0) + (r.Error?.Length ?? 0)));
        line.Raw("{\"type\":\"TRACE\",\"host\":\""u8);
        var plain = line.Plain(r.Host);
        line.Raw("\",\"time\":\""u8);
        Time(ref line, r.Time);
        line.Raw("\",\"client\":\""u8);
        plain &= line.Plain(r.Client);
        line.Raw("\",\"callStats\":{\"rx\":"u8);
        line.Number(r.Rx);
        line.Raw(",\"tx\":"u8);
        line.Number(r.Tx);
        line.Raw(",\"latency\":"u8);
        line.Number(r.Latency.Ticks * 100);
        line.Raw(",\"timetofirstbyte\":0,\"healthError\":null},\"statusCode\":"u8);
        line.Number(r.StatusCode);
        plain &= Field(ref line, ",\"statusMsg\":\""u8, phrase) &&
            Field(ref line, ",\"method\":\""u8, r.Method) &&
            Field(ref line, ",\"path\":\""u8, r.Path) &&
            Field(ref line, ",\"query\":\""u8, query) &&
            Field(ref line, ",\"cache\":\""u8, r.Cache) &&
            Field(ref line, ",\"forwarder\":\""u8, forwarder) &&
            Field(ref line, ",\"forwarderReason\":\""u8, reason) &&
            Field(ref line, ",\"error\":\""u8, r.Error);
        if (!plain)
        {
            return false; // nothing advanced: the writer starts over in the same space
        }

        line.Raw("}"u8);
        output.Advance(line.Written);
        return true;
    }

    /// <summary><paramref name="prefix"/> (<c>,"name":"</c>), the value and its closing quote; nothing for a null value (a field the record does not have).</summary>
    private static bool Field(ref Utf8Line line, ReadOnlySpan<byte> prefix, string? value)
    {
        if (value is null)
        {
            return true;
        }

        line.Raw(prefix);
        if (!line.Plain(value))
        {
            return false;
        }

        line.Raw("\""u8);
        return true;
    }

    /// <summary>The round-trip format with the fraction's trailing zeros left out, and the fraction with them when it is all zeros.</summary>
    private static void Time(ref Utf8Line line, DateTime utc)
    {
        var at = line.Free;
        utc.TryFormat(at, out _, "O", CultureInfo.InvariantCulture);
        var last = RoundTripLength - 2; // before the 'Z'
        while (at[last] == (byte)'0')
        {
            last--;
        }

        if (at[last] == (byte)'.')
        {
            last--;
        }

        at[last + 1] = (byte)'Z';
        line.Advance(last + 2);
    }
}
