using System.Buffers;
using System.Buffers.Text;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Forwarding.Http1;

/// <summary>How the body after a response head is delimited (RFC 9112 §6.3).</summary>
internal enum BodyFraming
{
    None,
    ContentLength,
    Chunked,
    UntilClose,
}

/// <summary>
/// A backend's response head (RFC 9112 §4–5), parsed in place from the receive buffer and copied onto the
/// client's response: status, end-to-end headers (hop-by-hop ones and those named in Connection dropped,
/// values the proxy set before kept and appended to, as YARP does), and the body framing.
/// </summary>
internal readonly struct ResponseHead
{
    /// <summary>Fields of a head parsed on the stack; a head with more takes a heap array (nginx sends 8).</summary>
    private const int FieldsOnStack = 32;

    private ResponseHead(BodyFraming framing, long contentLength, bool reusable, int keepAliveSeconds)
    {
        Framing = framing;
        ContentLength = contentLength;
        Reusable = reusable;
        KeepAliveSeconds = keepAliveSeconds;
    }

    public BodyFraming Framing { get; }

    public long ContentLength { get; }

    /// <summary>The backend lets the connection carry another request after this response.</summary>
    public bool Reusable { get; }

    /// <summary>
    /// How long the backend says it keeps an idle connection open (Keep-Alive: timeout=N, as Node and Apache
    /// send), in seconds; 0 when it does not say.
    /// </summary>
    public int KeepAliveSeconds { get; }

    /// <summary>Length of the head including its blank line, or -1 if it is not complete yet.</summary>
    public static int FindEnd(ReadOnlySpan<byte> data)
    {
        var scan = default(HeadScan);
        return FindEnd(data, ref scan);
    }

    /// <summary>
    /// Length of the head at the start of <paramref name="data"/> including its blank line, or -1 if it is not
    /// complete yet; then <paramref name="scan"/> keeps where the search stopped, and the next call (with the
    /// same bytes at the start of <paramref name="data"/> and more after them) goes on from there instead of
    /// from byte 0: a head that comes in many pieces costs its length, not its length times the pieces.
    /// Throws <see cref="HttpRequestException"/> (InvalidResponse) past
    /// <see cref="BackendLimits.MaxResponseHeadFieldLines"/> field lines.
    /// </summary>
    public static int FindEnd(ReadOnlySpan<byte> data, ref HeadScan scan)
    {
        // Line by line to the first empty one, CRLF or bare LF (RFC 9112 §2.2; tolerated, as HttpClient does),
        // so the body that came in the same receive is never searched.
        var lineStart = scan.LineStart;
        var searchFrom = scan.SearchFrom;
        var lines = scan.Lines;
        while (true)
        {
            // A line after the status line that is empty ends the head (when its CR has come, its LF too).
            if (lineStart > 0 && lineStart < data.Length)
            {
                if (data[lineStart] == (byte)'\n')
                {
                    return Found(ref scan, lineStart + 1);
                }

                if (lineStart + 1 < data.Length && data[lineStart] == (byte)'\r' && data[lineStart + 1] == (byte)'\n')
                {
                    return Found(ref scan, lineStart + 2);
                }
            }

            var lineEnd = data[searchFrom..].IndexOf((byte)'\n');
            if (lineEnd < 0)
            {
                // The line is incomplete: its start is kept for the check above, and what was searched of it
                // is not searched again.
                scan.Searched += data.Length - scan.SearchFrom;
                scan.LineStart = lineStart;
                scan.SearchFrom = data.Length;
                scan.Lines = lines;
                return -1;
            }

            lineStart = searchFrom = searchFrom + lineEnd + 1;
            if (++lines > BackendLimits.MaxResponseHeadFieldLines + 1)
            {
                throw Invalid($"more than {BackendLimits.MaxResponseHeadFieldLines} header lines");
            }
        }

        static int Found(ref HeadScan scan, int end)
        {
            scan.Searched += Math.Max(0, end - scan.SearchFrom);
            return end;
        }
    }

    /// <summary>Reads only the status code of a complete head (to skip 1xx interim responses).</summary>
    public static int PeekStatus(ReadOnlySpan<byte> head) =>
        head.Length >= 12 && head.StartsWith("HTTP/1."u8) && head[8] == ' ' &&
        Utf8Parser.TryParse(head.Slice(9, 3), out int status, out var used) && used == 3 ? status : -1;

    /// <summary>
    /// Parses a complete head and applies it to <paramref name="response"/>. Throws
    /// <see cref="HttpRequestException"/> (InvalidResponse) for a head that cannot be trusted, before
    /// anything is applied.
    /// </summary>
    [SkipLocalsInit]
    public static ResponseHead Apply(ReadOnlySpan<byte> head, HttpResponse response, bool isHeadRequest, ResponseHeaderValues values)
    {
        var status = PeekStatus(head);
        var statusLineEnd = head.IndexOf((byte)'\n');
        if (status < 200 || status > 999 || (head.Length > 12 && head[12] is not ((byte)' ' or (byte)'\r' or (byte)'\n')) ||
            !IsReasonPhrase((statusLineEnd < 0 ? head : head[..statusLineEnd]).TrimEnd((byte)'\r')))
        {
            throw Invalid("malformed status line");
        }

        // Each field is parsed once, into offsets: framing and connection options decide what is copied,
        // and a Connection header naming more hop-by-hop fields may come after them. The stack holds them (not
        // cleared first: only what is written is read), a longer head moves to the heap.
        Span<Field> fields = stackalloc Field[FieldsOnStack];
        var count = 0;
        long contentLength = -1;
        var chunked = false;
        var keepAliveSeconds = 0;
        // HTTP/1.0 closes unless told to keep alive; any "close", wherever it stands, is final (RFC 9112 §9.6), as it is
        // to HttpClient: a later keep-alive does not take it back.
        var http10 = head[7] != (byte)'1';
        var (sawClose, sawKeepAlive) = (false, false);
        List<string>? connectionNamed = null;
        var lineStart = head.IndexOf((byte)'\n') + 1;
        while (lineStart < head.Length)
        {
            var line = head[lineStart..];
            if (line.IndexOf((byte)'\n') is var lineLength and >= 0)
            {
                line = line[..lineLength];
            }

            if (line.Length > 0 && line[0] is (byte)' ' or (byte)'\t')
            {
                // obs-fold (RFC 9112 §5.2): a proxy may replace it with spaces, as HttpClient (YARP's path)
                // does; never for the fields that frame the body or the connection.
                if (count == 0 || fields[count - 1].Known is ResponseHeaderValues.ContentLength or ResponseHeaderValues.TransferEncoding or ResponseHeaderValues.Connection)
                {
                    throw Invalid("obsolete line folding");
                }

                var folded = fields[count - 1];
                var end = lineStart + line.Length - (line[^1] == (byte)'\r' ? 1 : 0);
                fields[count - 1] = folded with { ValueLength = end - folded.ValueStart, Scrub = true };
                lineStart += line.Length + 1;
                continue;
            }

            var field = Parse(line, lineStart);
            lineStart += line.Length + 1;
            if (field.NameLength == 0)
            {
                break;
            }

            if (count == fields.Length)
            {
                var larger = new Field[count * 2];
                fields.CopyTo(larger);
                fields = larger;
            }

            var value = head.Slice(field.ValueStart, field.ValueLength);
            switch (field.Known)
            {
                case ResponseHeaderValues.ContentLength:
                    // Digits only (no sign), and only once: HttpClient refuses a repeated Content-Length too.
                    if (value.IsEmpty || !char.IsAsciiDigit((char)value[0]) || !Utf8Parser.TryParse(value, out long length, out var used) ||
                        used != value.Length || contentLength >= 0)
                    {
                        throw Invalid("invalid Content-Length");
                    }

                    contentLength = length;
                    break;
                case ResponseHeaderValues.TransferEncoding:
                    if (!Ascii.EqualsIgnoreCase(value, "chunked"u8))
                    {
                        throw Invalid("unsupported Transfer-Encoding");
                    }

                    chunked = true;
                    break;
                case ResponseHeaderValues.Connection when ResponseHeaderValues.IsKeepAliveAlone(value):
                    // What the general case below concludes for this value, without decoding and splitting it.
                    sawKeepAlive = true;
                    break;
                case ResponseHeaderValues.Connection:
                    var options = values.Value(field.Known, value);
                    ReadOptions(options, ref sawClose, ref sawKeepAlive);
                    HopByHopHeaders.AddNamed(options, ref connectionNamed);
                    break;
                case ResponseHeaderValues.KeepAlive:
                    keepAliveSeconds = KeepAliveTimeout(value);
                    break;
            }

            fields[count++] = field;
        }

        response.StatusCode = status;
        var headers = response.Headers;
        // Appending to a value set before needs a lookup per field, a fifth of this method's cost. What is set
        // before is nearly always Server alone (the exchange's): then a known field is looked up only if it is
        // Server or came earlier in this head, and the others are plain sets.
        var presetIsServerAtMost = headers.Count switch
        {
            0 => true,
            1 => headers.ContainsKey(HeaderNames.Server),
            _ => false,
        };
        var knownSeen = 0UL;
        foreach (var field in fields[..count])
        {
            if (field.Known >= 0 && ResponseHeaderValues.IsDropped(field.Known))
            {
                continue;
            }

            var name = field.Known >= 0 ? ResponseHeaderValues.NameAt(field.Known) : Encoding.ASCII.GetString(head.Slice(field.NameStart, field.NameLength));
            if ((field.Known < 0 && HopByHopHeaders.Contains(name)) || HopByHopHeaders.IsNamed(connectionNamed, name))
            {
                continue;
            }

            var value = values.Value(field.Known, head.Slice(field.ValueStart, field.ValueLength));
            if (field.Scrub)
            {
                value = Scrub(value);
            }

            if (field.Latin1)
            {
                Latin1Fields.Allow(name);
            }

            var mayExist = true;
            if (presetIsServerAtMost && field.Known >= 0)
            {
                var bit = 1UL << field.Known;
                mayExist = field.Known == ResponseHeaderValues.Server || (knownSeen & bit) != 0;
                knownSeen |= bit;
            }

            headers[name] = mayExist && headers.TryGetValue(name, out var existing) ? values.Append(field.Known, existing, value) : new StringValues(value);
        }

        var noBody = isHeadRequest || status is 204 or 304;
        if (contentLength >= 0 && !chunked && status != 204)
        {
            response.ContentLength = contentLength;
        }

        var framing = noBody ? BodyFraming.None
            : chunked ? BodyFraming.Chunked
            : contentLength == 0 ? BodyFraming.None
            : contentLength > 0 ? BodyFraming.ContentLength
            : BodyFraming.UntilClose;
        // Chunked beside a Content-Length, or in an HTTP/1.0 response, is faulty framing, maybe an attempt at response
        // splitting (RFC 9112 §6.1, §6.3): the body is read as chunked and the connection is not used again.
        var faulty = chunked && (contentLength >= 0 || head[7] != (byte)'1');
        var close = sawClose || (http10 && !sawKeepAlive);
        return new ResponseHead(framing, contentLength, !close && !faulty && framing != BodyFraming.UntilClose, keepAliveSeconds);
    }

    /// <summary>
    /// The timeout parameter of a Keep-Alive header ("timeout=5, max=1000"; RFC 2068 §19.7.1.1, never
    /// standardised but still sent), in whole seconds; 0 when absent or not a positive number.
    /// </summary>
    private static int KeepAliveTimeout(ReadOnlySpan<byte> value)
    {
        foreach (var range in value.Split((byte)','))
        {
            var parameter = value[range];
            var (start, length) = WithoutOws(parameter);
            parameter = parameter.Slice(start, length);
            if (parameter.Length > 8 && Ascii.EqualsIgnoreCase(parameter[..8], "timeout="u8) &&
                Utf8Parser.TryParse(parameter[8..], out int seconds, out var used) && used == parameter.Length - 8 && seconds > 0)
            {
                return seconds;
            }
        }

        return 0;
    }

    /// <summary>
    /// One "name: value" line (without its LF) at <paramref name="offset"/> in the head, value trimmed of
    /// OWS; a field with no name marks the blank line that ends the head.
    /// </summary>
    private static Field Parse(ReadOnlySpan<byte> line, int offset)
    {
        if (!line.IsEmpty && line[^1] == (byte)'\r')
        {
            line = line[..^1];
        }

        if (line.IsEmpty)
        {
            return default;
        }

        var colon = line.IndexOf((byte)':');
        // RFC 9112 §5.1: a proxy removes whitespace between a response field's name and its colon.
        var name = colon < 0 ? default : line[..colon];
        while (!name.IsEmpty && name[^1] is (byte)' ' or (byte)'\t')
        {
            // Rare; a loop rather than TrimEnd(span), whose set search cost ~500 instructions a response.
            name = name[..^1];
        }

        if (name.IsEmpty)
        {
            throw Invalid("header line without a name");
        }

        var known = ResponseHeaderValues.IndexOf(name);
        if (known < 0)
        {
            foreach (var b in name)
            {
                // RFC 9110 §5.6.2 token characters.
                if (b <= 32 || b >= 127 || "\"(),/:;<=>?@[\\]{}"u8.Contains(b))
                {
                    throw Invalid("invalid header name");
                }
            }
        }

        var (start, length) = WithoutOws(line[(colon + 1)..]);
        var valueStart = colon + 1 + start;
        // RFC 9110 §5.5: NUL or a bare CR in a value is replaced with a space (or the message refused); replaced,
        // as HttpClient on YARP's path lets such a value through. The other control characters but HTAB are not
        // field content either, and Kestrel refuses to send them (an exception midway through the head): spaces too.
        // One range check for the common value (visible ASCII and spaces only); a closer look only past it.
        var value = line.Slice(valueStart, length);
        var unusual = value.IndexOfAnyExceptInRange((byte)0x20, (byte)0x7E) >= 0;
        var scrub = unusual && value.IndexOfAny(NotFieldContent) >= 0;
        var latin1 = unusual && value.IndexOfAnyInRange((byte)0x80, (byte)0xFF) >= 0;
        return new Field(offset, name.Length, offset + valueStart, length, known, scrub, latin1);
    }

    /// <summary>The close and keep-alive options of a Connection field line (RFC 9112 §9.3, §9.6).</summary>
    private static void ReadOptions(string connection, ref bool close, ref bool keepAlive)
    {
        foreach (var range in connection.AsSpan().Split(','))
        {
            var token = connection.AsSpan(range).Trim(" \t");
            close |= token.Equals("close", StringComparison.OrdinalIgnoreCase);
            keepAlive |= token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase);
        }
    }

    /// <summary>Where <paramref name="text"/> lies without its leading and trailing spaces and tabs (OWS).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (int Start, int Length) WithoutOws(ReadOnlySpan<byte> text)
    {
        var start = 0;
        var end = text.Length;
        while (start < end && text[start] is (byte)' ' or (byte)'\t')
        {
            start++;
        }

        while (end > start && text[end - 1] is (byte)' ' or (byte)'\t')
        {
            end--;
        }

        return (start, end - start);
    }

    /// <summary>RFC 9112 §4: reason-phrase = *( HTAB / SP / VCHAR / obs-text ), after the status code.</summary>
    private static bool IsReasonPhrase(ReadOnlySpan<byte> statusLine)
    {
        foreach (var b in statusLine.Length > 13 ? statusLine[13..] : default)
        {
            if ((b < 0x20 && b != (byte)'\t') || b == 0x7F)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Control characters other than HTAB (RFC 9110 §5.5 field-vchar excludes them).</summary>
    private static readonly SearchValues<byte> NotFieldContent = SearchValues.Create(
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 127]);

    /// <summary>
    /// A value with its folds, NULs, bare CRs and other control characters but HTAB turned into spaces (rare: only
    /// such values pay for it).
    /// </summary>
    private static string Scrub(string value) => string.Create(value.Length, value, static (span, source) =>
    {
        for (var i = 0; i < span.Length; i++)
        {
            var c = source[i];
            span[i] = c is < ' ' and not '\t' or '\u007f' ? ' ' : c;
        }
    });

    private static HttpRequestException Invalid(string what) =>
        new(HttpRequestError.InvalidResponse, $"the backend sent an invalid response head ({what})");

    /// <summary>
    /// Where one field's name and value lie in the head, and its known-name index (or -1); <c>Scrub</c> when the
    /// value holds folds, NULs, bare CRs or other controls to turn into spaces, <c>Latin1</c> when bytes above 0x7F.
    /// </summary>
    private readonly record struct Field(int NameStart, int NameLength, int ValueStart, int ValueLength, int Known, bool Scrub = false, bool Latin1 = false);
}

/// <summary>
/// Where <see cref="ResponseHead.FindEnd(ReadOnlySpan{byte}, ref HeadScan)"/> stopped in a head not complete yet,
/// as offsets from the head's first byte; <c>default</c> for each new head (after a 1xx interim response too).
/// </summary>
internal struct HeadScan
{
    /// <summary>Where the first line not complete yet starts.</summary>
    public int LineStart;

    /// <summary>Where the search for that line's LF goes on (all before it was searched).</summary>
    public int SearchFrom;

    /// <summary>Lines complete so far, the status line included.</summary>
    public int Lines;

    /// <summary>Bytes the LF searches passed over in all: the head's length at most (tests check it stays so).</summary>
    public int Searched;
}
