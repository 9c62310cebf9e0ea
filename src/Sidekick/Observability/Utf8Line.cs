using System.Buffers;
using System.Globalization;
using System.Text;

namespace Sidekick.Observability;

/// <summary>
/// A cursor writing one trace line as UTF-8 into a span sized beforehand for the longest line its values make
/// (<see cref="ShortJsonLine"/>, <see cref="ShortTextLine"/>). Text from the request goes through
/// <see cref="Plain"/>, which copies it only if it needs no escaping in either shape; the line's writer then falls
/// back to the general formatter, which escapes.
/// </summary>
internal ref struct Utf8Line(Span<byte> destination)
{
    private readonly Span<byte> _destination = destination;

    public int Written { get; private set; }

    /// <summary>The space left, for a value formatted in place (then <see cref="Advance"/>).</summary>
    public readonly Span<byte> Free => _destination[Written..];

    public void Advance(int count) => Written += count;

    public void Raw(scoped ReadOnlySpan<byte> utf8)
    {
        utf8.CopyTo(_destination[Written..]);
        Written += utf8.Length;
    }

    /// <summary>
    /// Copies <paramref name="text"/> if it is printable ASCII without '"' or '\\'; false at the first other
    /// character (nothing of it is counted). One pass for the check and the copy: the values are short, and a
    /// vectorised check and encoder each cost more in calls than the loop does.
    /// </summary>
    public bool Plain(string text)
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

    /// <summary>Text sidekick formatted itself (digits, units, a duration's "µs"): ASCII copied, anything else encoded.</summary>
    public void Chars(scoped ReadOnlySpan<char> text)
    {
        if (Ascii.FromUtf16(text, _destination[Written..], out var written) != OperationStatus.Done)
        {
            written = Encoding.UTF8.GetBytes(text, _destination[Written..]); // over what the ASCII pass began
        }

        Written += written;
    }

    public void Number(long value)
    {
        value.TryFormat(_destination[Written..], out var written, default, CultureInfo.InvariantCulture);
        Written += written;
    }

    public void Spaces(int count)
    {
        _destination.Slice(Written, count).Fill((byte)' ');
        Written += count;
    }
}
