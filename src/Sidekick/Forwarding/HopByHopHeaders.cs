using System.Collections.Frozen;
using Microsoft.Extensions.Primitives;

namespace Sidekick.Forwarding;

/// <summary>
/// Headers that describe one connection, not the message, and so never cross the proxy in either
/// direction: the same set YARP drops (RFC 9110 §7.6.1 plus the Proxy-* family and HTTP/2 leftovers), so
/// both forwarding paths send the same headers.
/// </summary>
internal static class HopByHopHeaders
{
    private static readonly FrozenSet<string> Names = new[]
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "TE", "Trailer", "Upgrade",
        "Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Authorization", "Proxy-Features",
        "Proxy-Instruction", "Security-Scheme", "ALPN", "Close", "HTTP2-Settings", "Alt-Svc",
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    public static bool Contains(string name) => Names.Contains(name);

    /// <summary>
    /// The extra header names a Connection header lists (RFC 9110 §7.6.1), which are hop-by-hop too;
    /// null when it lists none. The connection options themselves (close, keep-alive, upgrade) are not names.
    /// </summary>
    public static List<string>? NamedIn(StringValues connection)
    {
        List<string>? named = null;
        foreach (var value in connection)
        {
            if (value is not null)
            {
                AddNamed(value.AsSpan(), ref named);
            }
        }

        return named;
    }

    /// <inheritdoc cref="NamedIn(StringValues)"/>
    public static void AddNamed(ReadOnlySpan<char> connection, ref List<string>? named)
    {
        foreach (var range in connection.Split(','))
        {
            var token = connection[range].Trim(" \t");
            if (token.IsEmpty || token.Equals("close", StringComparison.OrdinalIgnoreCase) ||
                token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase) ||
                token.Equals("upgrade", StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            (named ??= []).Add(token.ToString());
        }
    }

    public static bool IsNamed(List<string>? named, string name)
    {
        if (named is null)
        {
            return false;
        }

        foreach (var candidate in named)
        {
            if (candidate.Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }
}
