using System.Buffers;
using Microsoft.AspNetCore.WebUtilities;
using Sidekick.Cli;
using Sidekick.Forwarding;

namespace Sidekick.Observability;

/// <summary>
/// The short text trace line, written straight as UTF-8 when every text from the request or the backend in it is
/// printable ASCII (as nearly every one is): the bytes <see cref="TraceFormatter"/> builds in a
/// <see cref="System.Text.StringBuilder"/> and encodes, without the builder's calls and the encoding pass. A record
/// with anything else (characters <see cref="PrintableText"/> escapes among them) is left to the formatter.
/// </summary>
internal static class ShortTextLine
{
    // More than the fixed text, the time, the status, both paddings' minimum, the latency and two sizes take.
    private const int FixedLength = 256;

    /// <summary>Writes <paramref name="r"/> as the short line (no newline); false, with nothing written, when it cannot.</summary>
    public static bool TryWrite(in TraceRecord r, bool colors, IBufferWriter<byte> output)
    {
        var query = r.Query.Length > 0 ? SecretRedaction.Query(r.Query) : "";
        var phrase = ReasonPhrases.GetReasonPhrase(r.StatusCode);
        // The client's padding is |15 - length| spaces, so a long client pads as much again.
        var line = new Utf8Line(output.GetSpan(FixedLength + phrase.Length + r.Host.Length + r.Method.Length + r.Path.Length + query.Length +
            2 * r.Client.Length + (r.Cache?.Length ?? 0) + (r.Error?.Length ?? 0) + 32));
        Span<char> chars = stackalloc char[Math.Max(GoDuration.MaxLength, ByteSize.MaxIecLength)];
        line.Raw("   LOG: "u8);
        line.Chars(TraceFormatter.Clock(r.Time, chars));
        line.Raw(" ["u8);
        if (colors)
        {
            line.Raw(r.StatusCode >= 400 ? "\u001b[31m"u8 : "\u001b[33m"u8);
        }

        line.Number(r.StatusCode);
        line.Raw(" "u8);
        var plain = line.Plain(phrase);
        if (colors)
        {
            line.Raw("\u001b[0m"u8);
        }

        line.Raw("]  "u8);
        plain &= line.Plain(r.Host);
        line.Raw(" "u8);
        plain &= line.Plain(r.Method);
        line.Raw(" "u8);
        plain &= line.Plain(r.Path);
        if (query.Length > 0)
        {
            line.Raw("?"u8);
            plain &= line.Plain(query);
        }

        line.Raw(" "u8);
        plain &= line.Plain(r.Client);
        line.Raw(" "u8);
        line.Spaces(Math.Max(15 - r.Client.Length, 1));
        line.Raw("  "u8);
        var latency = chars[..GoDuration.FormatRounded(r.Latency, chars)];
        line.Chars(latency);
        line.Spaces(Math.Max(Math.Abs(12 - latency.Length), 1));
        line.Raw(" ↑ "u8);
        line.Chars(chars[..ByteSize.FormatIec(r.Rx, chars)]);
        line.Raw(" ↓ "u8);
        line.Chars(chars[..ByteSize.FormatIec(r.Tx, chars)]);
        if (r.Cache is not null)
        {
            line.Raw(" cache="u8);
            plain &= line.Plain(r.Cache);
        }

        if (r.Forwarder is { } path)
        {
            line.Raw(" via="u8);
            plain &= line.Plain(path.PathName);
            if (path.Path == ForwardingPath.Yarp)
            {
                line.Raw("("u8);
                plain &= line.Plain(path.ReasonText);
                line.Raw(")"u8);
            }
        }

        if (r.Error is not null)
        {
            line.Raw(" error=\""u8);
            plain &= line.Plain(r.Error);
            line.Raw("\""u8);
        }

        if (!plain)
        {
            return false; // nothing advanced: the formatter starts over in the same space
        }

        output.Advance(line.Written);
        return true;
    }
}
