using System.Buffers;
using System.Text;
using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Caching;

/// <summary>
/// The form of a request target that invalidation remembers and lookups are checked against: the path alone, every
/// <c>%XX</c> decoded (an invalid escape is left as it is), trailing slashes dropped, no query and no Host. Entries are
/// named by the exact spelling (<see cref="CacheKey"/>), but an origin such as S3 reads <c>report%281%29.bin</c> and
/// <c>report(1).bin</c>, <c>?x-id=GetObject</c> and no query, <c>localhost</c> and <c>127.0.0.1</c> as one object: a
/// write spelled one way must not leave the entry a reader filled under another spelling fresh. The form only ever
/// joins spellings (a key and the same key with a trailing slash, one path on two hosts), so it can cost extra misses,
/// never serve a wrong entry.
/// </summary>
internal static class LoosePath
{
    /// <summary>The root: the whole of a virtual-host-style bucket, or the list of buckets in path style.</summary>
    public const string Root = "/";

    public static string Of(HttpRequest request) => Of(RawPath(request.HttpContext));

    /// <summary>The request's target as the client spelt it (no %XX decoded), without its query.</summary>
    public static string RawPath(HttpContext context)
    {
        var target = context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? context.Request.Path.Value ?? Root;
        var question = target.IndexOf('?', StringComparison.Ordinal);
        return question < 0 ? target : target[..question];
    }

    /// <summary>The loose form of <paramref name="target"/> (origin-form or absolute-form, query optional).</summary>
    public static string Of(string target)
    {
        var question = target.IndexOf('?', StringComparison.Ordinal);
        var path = question < 0 ? target : target[..question];
        if (!path.StartsWith('/') && Uri.TryCreate(path, UriKind.Absolute, out var absolute))
        {
            path = absolute.AbsolutePath; // a proxy's absolute-form target names the same path
        }

        return Trimmed(path.Contains('%', StringComparison.Ordinal) ? Decoded(path) : path);
    }

    /// <summary>The loose path of <paramref name="key"/> (an S3 object key, already decoded) inside <paramref name="container"/> (a loose path).</summary>
    public static string Join(string container, string key) =>
        Trimmed((container == Root ? "" : container) + "/" + key);

    /// <summary>The first segment of a loose path (<c>/bucket</c> of <c>/bucket/dir/key</c>), or <see cref="Root"/> for the root.</summary>
    public static string FirstSegment(string loose)
    {
        if (loose.Length <= 1)
        {
            return Root;
        }

        var slash = loose.IndexOf('/', 1);
        return slash < 0 ? loose : loose[..slash];
    }

    /// <summary>Whether the path is the root or has one segment: a bucket in path style, the bucket itself in virtual-host style.</summary>
    public static bool IsBucketLevel(string loose) => loose.Length <= 1 || loose.IndexOf('/', 1) < 0;

    private static string Trimmed(string path)
    {
        var end = path.Length;
        while (end > 1 && path[end - 1] == '/')
        {
            end--;
        }

        return end == 0 ? Root : end == path.Length ? path : path[..end];
    }

    /// <summary>Every <c>%XX</c> as the octet it names, the rest as UTF-8; the octets read back as UTF-8 (a bad sequence joins others: only extra misses).</summary>
    private static string Decoded(string path)
    {
        var octets = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetMaxByteCount(path.Length));
        try
        {
            var length = 0;
            var run = 0; // start of the characters not yet copied
            for (var i = 0; i < path.Length; i++)
            {
                if (path[i] != '%' || i + 2 >= path.Length || !char.IsAsciiHexDigit(path[i + 1]) || !char.IsAsciiHexDigit(path[i + 2]))
                {
                    continue;
                }

                length += Encoding.UTF8.GetBytes(path.AsSpan(run, i - run), octets.AsSpan(length));
                octets[length++] = (byte)((Hex(path[i + 1]) << 4) | Hex(path[i + 2]));
                i += 2;
                run = i + 1;
            }

            length += Encoding.UTF8.GetBytes(path.AsSpan(run), octets.AsSpan(length));
            return Encoding.UTF8.GetString(octets, 0, length);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(octets);
        }

        static int Hex(char digit) => digit <= '9' ? digit - '0' : (digit | 0x20) - 'a' + 10;
    }
}
