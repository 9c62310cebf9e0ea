using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Primitives;

namespace Sidekick.Forwarding.Http1;

/// <summary>
/// Header names a backend commonly sends, so parsing one costs no string, and a memory of their last values
/// (Date, Server, Content-Type, … repeat from response to response) for the same reason. One memory serves
/// all connections to a backend: with hundreds of connections a per-connection one was rarely in the CPU
/// cache (1 KiB x 256: 2.6 % of the user time, 0.7 % at x 32). Event loops on other threads may race on a
/// slot; a value is replaced whole and every reuse compares the bytes first, so a race costs only a miss.
/// </summary>
internal sealed class ResponseHeaderValues
{
    // Indexes in Names of the fields that frame the body or the connection.
    public const int ContentLength = 0;
    public const int Connection = 7;
    public const int KeepAlive = 8;
    public const int TransferEncoding = 9;

    /// <summary>The one field the exchange sets before the backend's head is applied (Server: SideKick).</summary>
    public const int Server = 3;

    private static readonly string[] Names =
    [
        "Content-Length", "Content-Type", "Date", "Server", "ETag", "Last-Modified", "Accept-Ranges",
        "Connection", "Keep-Alive", "Transfer-Encoding", "Cache-Control", "Expires", "Vary", "Content-Encoding",
        "Content-Range", "Content-Disposition", "Content-Language", "Location", "Set-Cookie", "Age",
        "Strict-Transport-Security", "X-Content-Type-Options", "X-Xss-Protection", "Content-Security-Policy",
        "X-Amz-Request-Id", "X-Amz-Id-2", "X-Amz-Bucket-Region", "X-Ratelimit-Limit", "X-Ratelimit-Remaining",
        "Retry-After", "WWW-Authenticate",
    ];

    /// <summary>Each name's bytes lower-cased, and which of them are letters (0x20 there, 0 elsewhere).</summary>
    private static readonly byte[][] LowerNames = Names.Select(n => Encoding.ASCII.GetBytes(n.ToLowerInvariant())).ToArray();

    private static readonly byte[][] LetterMasks = Names.Select(LetterMask).ToArray();

    /// <summary>Indexes of the names of each length: a name is compared only with the few as long as it.</summary>
    private static readonly int[][] ByLength = Enumerable.Range(0, Names.Max(n => n.Length) + 1)
        .Select(length => Enumerable.Range(0, Names.Length).Where(i => Names[i].Length == length).ToArray())
        .ToArray();

    /// <summary>Known names never copied to the client: hop-by-hop ones, and Content-Length (Kestrel frames the body).</summary>
    private static readonly bool[] Dropped = Names
        .Select(n => HopByHopHeaders.Contains(n) || n.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
        .ToArray();

    private readonly LastValue?[] _lastValues = new LastValue?[Names.Length];

    private readonly Appended?[] _lastAppended = new Appended?[Names.Length];

    /// <summary>Index of a known name (ASCII case-insensitive), or -1.</summary>
    public static int IndexOf(ReadOnlySpan<byte> name)
    {
        if ((uint)name.Length >= (uint)ByLength.Length)
        {
            return -1;
        }

        foreach (var i in ByLength[name.Length])
        {
            if (EqualsIgnoreCase(name, LowerNames[i], LetterMasks[i]))
            {
                return i;
            }
        }

        return -1;
    }

    private static readonly byte[] KeepAliveToken = "keep-alive"u8.ToArray();
    private static readonly byte[] KeepAliveMask = LetterMask("keep-alive");

    /// <summary>0x20 where <paramref name="name"/> has a letter, 0 elsewhere (see <see cref="EqualsIgnoreCase"/>).</summary>
    private static byte[] LetterMask(string name) => name.Select(c => char.IsAsciiLetter(c) ? (byte)0x20 : (byte)0).ToArray();

    /// <summary>Whether a Connection value is exactly the one option keep-alive (any case), as nearly every backend sends.</summary>
    public static bool IsKeepAliveAlone(ReadOnlySpan<byte> value) => EqualsIgnoreCase(value, KeepAliveToken, KeepAliveMask);

    /// <summary>
    /// <paramref name="name"/> against a lower-cased known name of the same length, eight bytes at a time: setting
    /// bit 0x20 where the known name has a letter folds only 'A'-'Z' onto 'a'-'z' there (x | 0x20 == 'a' holds for
    /// 'A' and 'a' alone), and every other byte must match exactly. Overlapping loads cover the tail; the first
    /// byte alone rules most candidates out. Measured with callgrind: Ascii.EqualsIgnoreCase cost ~140
    /// instructions a field.
    /// </summary>
    private static bool EqualsIgnoreCase(ReadOnlySpan<byte> name, byte[] lower, byte[] mask)
    {
        var length = name.Length;
        if (length != lower.Length || length != mask.Length)
        {
            return false;
        }

        if (length == 0)
        {
            return true;
        }

        // The lengths are equal (checked above), so every read below stays inside all three.
        ref var n = ref MemoryMarshal.GetReference(name);
        ref var l = ref MemoryMarshal.GetArrayDataReference(lower);
        ref var m = ref MemoryMarshal.GetArrayDataReference(mask);
        if ((n | m) != l)
        {
            return false;
        }

        if (length >= sizeof(ulong))
        {
            var last = length - sizeof(ulong);
            for (var at = 0; at < last; at += sizeof(ulong))
            {
                if ((Read<ulong>(ref n, at) | Read<ulong>(ref m, at)) != Read<ulong>(ref l, at))
                {
                    return false;
                }
            }

            return (Read<ulong>(ref n, last) | Read<ulong>(ref m, last)) == Read<ulong>(ref l, last);
        }

        if (length >= sizeof(uint))
        {
            var last = length - sizeof(uint);
            return (Read<uint>(ref n, 0) | Read<uint>(ref m, 0)) == Read<uint>(ref l, 0) &&
                   (Read<uint>(ref n, last) | Read<uint>(ref m, last)) == Read<uint>(ref l, last);
        }

        for (var i = 1; i < length; i++)
        {
            if ((Unsafe.Add(ref n, i) | Unsafe.Add(ref m, i)) != Unsafe.Add(ref l, i))
            {
                return false;
            }
        }

        return true;
    }

    private static T Read<T>(ref byte start, int at)
        where T : unmanaged => Unsafe.ReadUnaligned<T>(ref Unsafe.Add(ref start, at));

    public static string NameAt(int index) => Names[index];

    /// <summary>How many names are known (indexes 0 to this, exclusive).</summary>
    public static int KnownCount => Names.Length;

    public static bool IsDropped(int index) => Dropped[index];

    /// <summary>The value as a string, reusing the previous one when the bytes are the same.</summary>
    public string Value(int knownIndex, ReadOnlySpan<byte> value)
    {
        if (knownIndex < 0)
        {
            return Decode(value);
        }

        // Bytes against bytes: comparing them with the string (widening each byte) cost three times as much.
        if (_lastValues[knownIndex] is { } last && value.SequenceEqual(last.Bytes))
        {
            return last.Text;
        }

        var text = Decode(value);
        _lastValues[knownIndex] = new LastValue(value.ToArray(), text);
        return text;
    }

    /// <summary>
    /// A value the proxy set before (Server: SideKick) with the backend's appended, reusing the previous
    /// pair's array when both strings are the same ones. StringValues never writes into its array, so one
    /// array can stand in many responses.
    /// </summary>
    public StringValues Append(int knownIndex, StringValues existing, string value)
    {
        if (knownIndex < 0 || existing.Count != 1)
        {
            return StringValues.Concat(existing, value);
        }

        var first = existing[0];
        if (_lastAppended[knownIndex] is { } last && ReferenceEquals(last.First, first) && ReferenceEquals(last.Second, value))
        {
            return last.Both;
        }

        var both = StringValues.Concat(existing, value);
        _lastAppended[knownIndex] = new Appended(first, value, both);
        return both;
    }

    /// <summary>Latin-1, as HttpClient decodes response headers: every byte maps to one char and back.</summary>
    public static string Decode(ReadOnlySpan<byte> value) => value.IsEmpty ? "" : Encoding.Latin1.GetString(value);

    /// <summary>A field's last value, its bytes beside its string; replaced whole, as <see cref="Appended"/>.</summary>
    private sealed record LastValue(byte[] Bytes, string Text);

    /// <summary>Replaced whole, so a thread racing on the slot sees a consistent pair.</summary>
    private sealed record Appended(string? First, string Second, StringValues Both);
}
