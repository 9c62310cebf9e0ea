using Sidekick.Forwarding;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Integration;

/// <summary>
/// --trusted-proxies: only a trusted peer's X-Forwarded-For chain is continued and its Forwarded, X-Forwarded-Proto
/// and X-Forwarded-Host passed on. MinIO checks aws:SourceIp against the first X-Forwarded-For entry, so any other
/// client could name the address a bucket policy allows. Through the real process (the setting is process-wide) on
/// both forwarding paths, with a raw-socket backend that keeps every byte it received.
/// </summary>
public sealed class TrustedProxiesTests
{
    private const string Claims =
        "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.7\r\nForwarded: for=1.1.1.1;proto=https\r\nX-Forwarded-Proto: https\r\n" +
        // The same claims as other frameworks spell them; MinIO reads X-Forwarded-Scheme as X-Forwarded-Proto.
        "X-Forwarded-Scheme: https\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Protocol: https\r\nX-Forwarded-Port: 443\r\n";

    private static readonly string[] OtherSpellings = ["X-Forwarded-Scheme: https", "X-Forwarded-Ssl: on", "X-Forwarded-Protocol: https", "X-Forwarded-Port: 443"];

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task A_peer_that_is_not_trusted_cannot_name_the_client_to_the_backend(string forwarder)
    {
        var (head, stdout) = await ExchangeAsync(forwarder, "--trusted-proxies", "10.0.0.0/8");

        var lines = Lines(head);
        var forwardedFor = Assert.Single(lines, l => l.StartsWith("X-Forwarded-For:", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(",", forwardedFor, StringComparison.Ordinal);
        Assert.DoesNotContain("6.6.6", head, StringComparison.Ordinal);
        Assert.DoesNotContain("1.1.1.1", head, StringComparison.Ordinal);
        Assert.DoesNotContain(lines, l => l.StartsWith("Forwarded:", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(lines, l => l.StartsWith("X-Forwarded-Proto:", StringComparison.OrdinalIgnoreCase));
        foreach (var claim in OtherSpellings)
        {
            Assert.DoesNotContain(lines, l => l.StartsWith(claim.Split(':')[0] + ":", StringComparison.OrdinalIgnoreCase));
        }

        // The trace names the peer, not what it claimed.
        Assert.DoesNotContain("6.6.6", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("1.1.1.1", stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task A_trusted_peers_chain_is_continued_and_its_fields_passed_on(string forwarder)
    {
        // Loopback is trusted by default: a proxy in front of the sidecar on the same host keeps working.
        var (head, stdout) = await ExchangeAsync(forwarder);

        var lines = Lines(head);
        var forwardedFor = Assert.Single(lines, l => l.StartsWith("X-Forwarded-For:", StringComparison.OrdinalIgnoreCase));
        Assert.StartsWith("X-Forwarded-For: 6.6.6.6, ", forwardedFor, StringComparison.Ordinal);
        Assert.Contains(lines, l => l.Equals("Forwarded: for=1.1.1.1;proto=https", StringComparison.OrdinalIgnoreCase));
        Assert.Contains(lines, l => l.Equals("X-Forwarded-Proto: https", StringComparison.OrdinalIgnoreCase));
        foreach (var claim in OtherSpellings)
        {
            Assert.Contains(lines, l => l.Equals(claim, StringComparison.OrdinalIgnoreCase));
        }

        Assert.Contains("6.6.6.6", stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("10.0.0.0/33")]
    [InlineData("example.com")]
    [InlineData("10.0.0.0/8,,nonsense")]
    public void A_bad_entry_is_a_usage_error_naming_it(string value)
    {
        var error = Assert.Throws<Sidekick.Cli.UsageException>(() => TrustedProxies.Parse(value));
        Assert.StartsWith("invalid --trusted-proxies entry \"", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Addresses_and_ranges_of_both_families_are_matched_and_mapped_IPv4_is_IPv4()
    {
        var trusted = TrustedProxies.Parse("10.1.0.0/16, 192.0.2.7 ,2001:db8::/32");
        Assert.True(trusted.Trusts(System.Net.IPAddress.Parse("10.1.200.3")));
        Assert.True(trusted.Trusts(System.Net.IPAddress.Parse("::ffff:10.1.0.1")));
        Assert.True(trusted.Trusts(System.Net.IPAddress.Parse("192.0.2.7")));
        Assert.True(trusted.Trusts(System.Net.IPAddress.Parse("2001:db8::5")));
        Assert.False(trusted.Trusts(System.Net.IPAddress.Parse("10.2.0.1")));
        Assert.False(trusted.Trusts(System.Net.IPAddress.Parse("192.0.2.8")));
        Assert.False(trusted.Trusts(System.Net.IPAddress.Loopback));
        Assert.False(trusted.Trusts(null));
        Assert.False(TrustedProxies.Parse("").Trusts(System.Net.IPAddress.Loopback));
        Assert.True(TrustedProxies.Default.Trusts(System.Net.IPAddress.IPv6Loopback));
    }

    private static async Task<(string Head, string Stdout)> ExchangeAsync(string forwarder, params string[] flags)
    {
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        var port = SidekickProcess.FreePort();
        string[] args = ["--health-path", "/health", "--address", $"127.0.0.1:{port}", "--trace", "all", "--json", .. flags, backend.Url.ToString().TrimEnd('/')];
        await using var sidekick = SidekickProcess.StartIn(Environment.CurrentDirectory, new Dictionary<string, string> { ["SIDEKICK_FORWARDER"] = forwarder }, args);
        await sidekick.WaitForHealthAsync(port);

        var answer = await RawClient.ExchangeAsync(port, $"GET /o HTTP/1.1\r\nHost: h\r\n{Claims}\r\n");
        Assert.Equal((200, "ok"), (answer.Status, answer.Body));
        await Eventually.WaitUntilAsync(() => sidekick.Stdout.Contains("\"/o\"", StringComparison.Ordinal));
        return (backend.Requests.Single(r => r.Target == "/o").Head, sidekick.Stdout);
    }

    private static string[] Lines(string head) => head.Split("\r\n");
}
