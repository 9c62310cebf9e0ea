using Sidekick.Forwarding;

namespace Sidekick.Tests.Forwarding;

public sealed class HopByHopHeadersTests
{
    // The set YARP drops: RFC 9110 §7.6.1, the Proxy-* family and HTTP/2 leftovers.
    public static TheoryData<string> HopByHop => new()
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "TE", "Trailer", "Upgrade",
        "Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Authorization", "Proxy-Features",
        "Proxy-Instruction", "Security-Scheme", "ALPN", "Close", "HTTP2-Settings", "Alt-Svc",
    };

    [Theory]
    [MemberData(nameof(HopByHop))]
    public void Every_hop_by_hop_name_is_known_in_any_case(string name)
    {
        Assert.True(HopByHopHeaders.Contains(name));
        Assert.True(HopByHopHeaders.Contains(name.ToUpperInvariant()));
        Assert.True(HopByHopHeaders.Contains(name.ToLowerInvariant()));
    }

    [Theory]
    [InlineData("Content-Length")] // the same length as two hop-by-hop names
    [InlineData("Content-Type")]
    [InlineData("ETag")]
    [InlineData("Date")]
    [InlineData("Trailers")]
    [InlineData("Connections")]
    [InlineData("Keep-Alive2")]
    [InlineData("X-Upgrade")]
    [InlineData("Proxy-Authorisation")]
    [InlineData("T")]
    [InlineData("")]
    public void End_to_end_names_pass(string name) => Assert.False(HopByHopHeaders.Contains(name));

    [Theory]
    [InlineData("Content-Length, X-A", "X-A")]
    [InlineData("transfer-encoding,HOST , x-forwarded-for, X-Forwarded-Host, x-real-ip, X-Proxy, X-Cache, X-B", "X-B")]
    [InlineData("close, keep-alive, Upgrade, X-C", "X-C")]
    [InlineData("bad token, X-D, (x), a/b", "X-D")]
    [InlineData("Content-Length", null)]
    public void A_connection_header_never_names_a_framing_or_routing_field(string connection, string? expected)
    {
        var named = HopByHopHeaders.NamedIn(new Microsoft.Extensions.Primitives.StringValues(connection));
        Assert.Equal(expected is null ? null : [expected], named);
    }
}
