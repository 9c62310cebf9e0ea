using System.Buffers.Text;

namespace Sidekick.Forwarding.Http1;

/// <summary>
/// Decodes a chunked body (RFC 9112 §7.1) in place: hands out the data slices of the receive buffer and
/// skips sizes, extensions and trailers. The client side re-frames the data as Kestrel sees fit.
/// </summary>
internal struct ChunkedDecoder
{
    private State _state;
    private long _remaining;

    public enum Step
    {
        NeedMore,
        Data,
        Done,
    }

    private enum State
    {
        Size,
        Data,
        DataEnd,
        Trailers,
        Done,
    }

    /// <summary>
    /// Advances over <paramref name="input"/>. <paramref name="consumed"/> bytes of it are used up (data
    /// included); on <see cref="Step.Data"/> the data is <c>input[dataStart..(dataStart+dataLength)]</c>.
    /// </summary>
    public Step Next(ReadOnlySpan<byte> input, out int consumed, out int dataStart, out int dataLength)
    {
        consumed = 0;
        dataStart = 0;
        dataLength = 0;
        while (true)
        {
            var rest = input[consumed..];
            switch (_state)
            {
                case State.Size:
                {
                    var lf = rest.IndexOf((byte)'\n');
                    if (lf < 0)
                    {
                        return Step.NeedMore;
                    }

                    var line = rest[..lf];
                    var end = line.IndexOfAny(";\r \t"u8);
                    var digits = end < 0 ? line : line[..end];
                    if (digits.IsEmpty || !Utf8Parser.TryParse(digits, out long size, out var used, 'X') || used != digits.Length || size < 0)
                    {
                        throw Invalid("invalid chunk size");
                    }

                    consumed += lf + 1;
                    _remaining = size;
                    _state = size == 0 ? State.Trailers : State.Data;
                    continue;
                }

                case State.Data:
                {
                    if (rest.IsEmpty)
                    {
                        return Step.NeedMore;
                    }

                    var take = (int)Math.Min(rest.Length, _remaining);
                    // When the chunk's end came with its data, check it before handing the data out, as
                    // HttpClient does: a chunk longer than its size is refused before anything reaches the client.
                    if (take == _remaining && rest.Length > take &&
                        rest[take] != (byte)'\n' && (rest[take] != (byte)'\r' || (rest.Length > take + 1 && rest[take + 1] != (byte)'\n')))
                    {
                        throw Invalid("chunk data longer than its size");
                    }

                    dataStart = consumed;
                    dataLength = take;
                    consumed += take;
                    _remaining -= take;
                    if (_remaining == 0)
                    {
                        _state = State.DataEnd;
                    }

                    return Step.Data;
                }

                case State.DataEnd:
                    if (rest.IsEmpty || (rest[0] == (byte)'\r' && rest.Length < 2))
                    {
                        return Step.NeedMore;
                    }

                    if (rest[0] == (byte)'\n')
                    {
                        consumed += 1;
                    }
                    else if (rest[0] == (byte)'\r' && rest[1] == (byte)'\n')
                    {
                        consumed += 2;
                    }
                    else
                    {
                        throw Invalid("chunk data longer than its size");
                    }

                    _state = State.Size;
                    continue;

                case State.Trailers:
                {
                    var lf = rest.IndexOf((byte)'\n');
                    if (lf < 0)
                    {
                        return Step.NeedMore;
                    }

                    consumed += lf + 1;
                    if (lf == 0 || (lf == 1 && rest[0] == (byte)'\r'))
                    {
                        _state = State.Done;
                        return Step.Done;
                    }

                    continue;
                }

                default:
                    return Step.Done;
            }
        }
    }

    private static HttpIOException Invalid(string what) =>
        new(HttpRequestError.InvalidResponse, $"the backend sent an invalid chunked body ({what})");
}
