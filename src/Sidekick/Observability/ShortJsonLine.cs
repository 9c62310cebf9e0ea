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
    public static bool TryWrite(TraceRecord r, IBufferWriter<byte> output)
    {
        if (r.Time.Kind != DateTimeKind.Utc)
        {
            return false;
        }

        var query = SecretRedaction.Query(r.Query);
        var phrase = ReasonPhrases.GetReasonPhrase(r.StatusCode);
        var forwarder = r.Forwarder is { } path ? path.PathName : null;
        var reason = r.Forwarder is { } chosen ? chosen.ReasonText : null;
        var line = new Line(output.GetSpan(FixedLength + r.Host.Length + r.Client.Length + phrase.Length + r.Method.Length + r.Path.Length +
            query.Length + (r.Cache?.Length ?? 0) + (forwarder?.Length ?? 0) + (reason?.Length ?? 0) + (r.Error?.Length ?? 0)));
        line.Raw("{\"type\":\"TRACE\",\"host\":\""u8);
        var plain = line.Text(r.Host);
        line.Raw("\",\"time\":\""u8);
        line.Time(r.Time);
        line.Raw("\",\"client\":\""u8);
        plain &= line.Text(r.Client);
        line.Raw("\",\"callStats\":{\"rx\":"u8);
        line.Number(r.Rx);
        line.Raw(",\"tx\":"u8);
        line.Number(r.Tx);
        line.Raw(",\"latency\":"u8);
        line.Number(r.Latency.Ticks * 100);
        line.Raw(",\"timetofirstbyte\":0,\"healthError\":null},\"statusCode\":"u8);
        line.Number(r.StatusCode);
        plain &= line.Field(",\"statusMsg\":\""u8, phrase) &&
            line.Field(",\"method\":\""u8, r.Method) &&
            line.Field(",\"path\":\""u8, r.Path) &&
            line.Field(",\"query\":\""u8, query) &&
            line.Field(",\"cache\":\""u8, r.Cache) &&
            line.Field(",\"forwarder\":\""u8, forwarder) &&
            line.Field(",\"forwarderReason\":\""u8, reason) &&
            line.Field(",\"error\":\""u8, r.Error);
        if (!plain)
        {
            return false; // nothing advanced: the writer starts over in the same space
        }

        line.Raw("}"u8);
        output.Advance(line.Written);
        return true;
    }

    /// <summary>A cursor over the span the line is written into (sized beforehand for the longest line these values make).</summary>
    private ref struct Line(Span<byte> destination)
    {
        private readonly Span<byte> _destination = destination;

        public int Written { get; private set; }

        public void Raw(ReadOnlySpan<byte> utf8)
        {
            utf8.CopyTo(_destination[Written..]);
            Written += utf8.Length;
        }

        /// <summary>
        /// Copies <paramref name="text"/> if it is printable ASCII without '"' or '\'; false at the first other
        /// character. One pass for the check and the copy: the values are short, and a vectorised check and encoder
        /// each cost more in calls than the loop does.
        /// </summary>
        public bool Text(string text)
        {
            var at = _destination.Slice(Written, text.Length);
            for (var i = 0; i < text.Length; i++)
            {
                var c = text[i];
                if (c is < ' ' or > '~' or '"' or '\\')
                {
                    return false;
                }

                at[i] = (byte)c;
            }

            Written += text.Length;
            return true;
        }

        /// <summary><paramref name="prefix"/> (<c>,"name":"</c>), the value and its closing quote; nothing for a null value (a field the record does not have).</summary>
        public bool Field(ReadOnlySpan<byte> prefix, string? value)
        {
            if (value is null)
            {
                return true;
            }

            Raw(prefix);
            if (!Text(value))
            {
                return false;
            }

            Raw("\""u8);
            return true;
        }

        public void Number(long value)
        {
            value.TryFormat(_destination[Written..], out var written, default, CultureInfo.InvariantCulture);
            Written += written;
        }

        /// <summary>The round-trip format with the fraction's trailing zeros left out, and the fraction with them when it is all zeros.</summary>
        public void Time(DateTime utc)
        {
            var at = _destination[Written..];
            utc.TryFormat(at, out _, "O", CultureInfo.InvariantCulture);
            var end = RoundTripLength - 1; // the 'Z'
            var last = end - 1;
            while (at[last] == (byte)'0')
            {
                last--;
            }

            if (at[last] == (byte)'.')
            {
                last--;
            }

            at[last + 1] = (byte)'Z';
            Written += last + 2;
        }
    }
}
