using System.Collections.Concurrent;
using System.Text;

namespace Sidekick.Forwarding;

/// <summary>
/// The response fields Kestrel writes as Latin-1 rather than ASCII. Backends send header values as bytes, some above
/// 0x7F (UTF-8 in S3 user metadata, which MinIO sends raw; a Latin-1 file name), and both forwarders decode them as
/// Latin-1, so writing them back as Latin-1 passes the backend's bytes on unchanged; Kestrel's default refuses any such
/// character with an exception (a 500). Latin-1 for every field cost about 750 instructions a response (Kestrel's
/// Latin-1 writer and checks, against its ASCII ones), so only the names a value above 0x7F was seen under take it,
/// from the moment one was: nothing else pays more than the selector's call. Past <see cref="MaxNames"/> names every
/// field is written as Latin-1: backend responses choose the names (S3 user metadata, <c>x-amz-meta-*</c>, is any
/// user's to write), and refusing the names past a cap made every later such field, of any object, a 502 that marked
/// the backend down, until a restart.
/// </summary>
internal static class Latin1Fields
{
    /// <summary>Names remembered at most; past them every name is written as Latin-1.</summary>
    internal const int MaxNames = 1024;

    private static readonly ConcurrentDictionary<string, byte> Names = new(StringComparer.OrdinalIgnoreCase);
    private static volatile bool s_any;
    private static volatile bool s_all;

    /// <summary>Kestrel's ResponseHeaderEncodingSelector: Latin-1 for the names seen with such values, else its ASCII.</summary>
    public static readonly Func<string, Encoding?> Selector = static name => s_any && (s_all || Names.ContainsKey(name)) ? Encoding.Latin1 : null;

    /// <summary>From now on <paramref name="name"/> is written as Latin-1; before its value is set, which Kestrel checks.</summary>
    public static void Allow(string name)
    {
        // Every name is Latin-1 already (past the cap), or this one is known: the common case once a backend sends such
        // a field on every response. (Count takes every lock.)
        if (s_all || (s_any && Names.ContainsKey(name)))
        {
            return;
        }

        if (Names.Count < MaxNames)
        {
            Names.TryAdd(name, 0);
        }
        else
        {
            s_all = true;
        }

        s_any = true;
    }

    /// <summary><see cref="Allow"/> when <paramref name="value"/> holds a character above 0x7F.</summary>
    public static void AllowFor(string name, string? value)
    {
        if (value is not null && value.AsSpan().IndexOfAnyExceptInRange('\0', '\u007f') >= 0)
        {
            Allow(name);
        }
    }
}
