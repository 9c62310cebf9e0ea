using System.Net;
using System.Text;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;
using Sidekick.Topology;

namespace Sidekick.Tests.Integration;

/// <summary>
/// A Connection header may name hop-by-hop fields, but never the ones that frame or route a message
/// (Content-Length, Transfer-Encoding, Host, X-Forwarded-*, X-Real-IP). Hostile requests go in on a raw
/// socket; a raw-socket backend logs every byte it receives, so the tests check what the backend and the
/// other clients received, byte for byte, on both forwarding paths.
/// </summary>
public sealed class ConnectionHeaderTests
{
    /// <summary>The reviewer's reproduction: a POST whose body is a whole second request.</summary>
    private const string Smuggled = "GET /poison HTTP/1.1\r\nHost: internal.admin\r\nX-Real-IP: 10.6.6.6\r\n\r\n";

    private static readonly string Attack =
        $"POST /a HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\nContent-Length: {Smuggled.Length}\r\n\r\n{Smuggled}";

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task Connection_content_length_smuggles_nothing_through_the_real_process(string forwarder)
    {
        await using var backend = new RawBackend(EchoTarget);
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.StartIn(Environment.CurrentDirectory, new Dictionary<string, string> { ["SIDEKICK_FORWARDER"] = forwarder },
            "--health-path", "/health", "--health-duration", "1h", "--address", $"127.0.0.1:{port}", backend.Url.ToString().TrimEnd('/'));
        await sidekick.WaitForHealthAsync(port);

        var attack = await RawClient.ExchangeAsync(port, Attack);
        Assert.Equal(200, attack.Status);
        Assert.Equal("/a", attack.Body);

        // Clients after the attacker, each on its own connection, get their own responses.
        for (var i = 0; i < 4; i++)
        {
            var victim = await RawClient.ExchangeAsync(port, $"GET /victim{i} HTTP/1.1\r\nHost: x\r\n\r\n");
            Assert.Equal($"/victim{i}", victim.Body);
        }

        AssertNoSmuggledRequest(backend);
        Assert.DoesNotContain("Misused", sidekick.Stdout + sidekick.Stderr, StringComparison.Ordinal);
    }

    /// <summary>Tokens a client puts in Connection, and what the backend must then see.</summary>
    public static TheoryData<string, string> RequestTokens
    {
        get
        {
            var data = new TheoryData<string, string>();
            foreach (var forwarder in new[] { "http1", "yarp" })
            {
                foreach (var token in new[] { "Content-Length", "Transfer-Encoding", "Host", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP", "X-Proxy", "Content-Type", "Accept", "X-Hop", "bad token, X-Hop" })
                {
                    data.Add(forwarder, token);
                }
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(RequestTokens))]
    public async Task A_connection_token_never_changes_framing_or_routing(string forwarder, string token)
    {
        await using var backend = new RawBackend(EchoTarget);
        await using var sidekick = await StartAsync(forwarder, backend.Url);
        var port = sidekick.BaseAddress.Port;
        const string body = "0123456789";
        var chunked = token == "Transfer-Encoding";
        var request = new StringBuilder($"POST /t HTTP/1.1\r\nHost: client.example\r\nConnection: {token}\r\n")
            .Append("X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Host: spoofed.example\r\nX-Real-IP: 10.6.6.6\r\nX-Hop: hop\r\n")
            .Append("Content-Type: text/plain\r\nAccept: */*\r\n")
            .Append(chunked ? $"Transfer-Encoding: chunked\r\n\r\n{body.Length:x}\r\n{body}\r\n0\r\n\r\n" : $"Content-Length: {body.Length}\r\n\r\n{body}")
            .ToString();

        var response = await RawClient.ExchangeAsync(port, request, then: "GET /after HTTP/1.1\r\nHost: client.example\r\n\r\n");
        Assert.Equal(200, response.Status);
        Assert.Equal("/t", response.Body);
        Assert.Equal("/after", response.Next!.Body);

        var seen = backend.Requests.ToArray();
        Assert.Equal(["POST /t", "GET /after"], seen.Select(r => $"{r.Method} {r.Target}"));
        var head = seen[0].Head;
        var client = Sidekick.Forwarding.ClientAddress.For(IPAddress.Loopback);
        Assert.True(head.Contains("\r\nHost: client.example\r\n", StringComparison.Ordinal), head);
        Assert.True(head.Contains($"\r\nX-Forwarded-For: 192.0.2.7, {client}\r\n", StringComparison.Ordinal), head);
        Assert.True(head.Contains("\r\nX-Forwarded-Host: client.example\r\n", StringComparison.Ordinal), head);
        Assert.True(head.Contains($"\r\nX-Real-IP: {client}\r\n", StringComparison.Ordinal), head);
        Assert.False(head.Contains("10.6.6.6", StringComparison.Ordinal), head);
        Assert.False(head.Contains("spoofed.example", StringComparison.Ordinal), head);
        Assert.Equal(1, Count(head, "\r\nHost:"));
        Assert.Equal(1, Count(head, "\r\nX-Real-IP:"));
        Assert.False(head.Contains("\r\nConnection: keep-alive, ", StringComparison.OrdinalIgnoreCase), head);

        // The body arrives framed by what sidekick read: as sent, or its length stated by sidekick.
        var framedBody = Encoding.Latin1.GetString(seen[0].Body);
        Assert.Contains(body, framedBody, StringComparison.Ordinal);
        Assert.True(head.Contains($"\r\nContent-Length: {body.Length}\r\n", StringComparison.OrdinalIgnoreCase) ||
                    head.Contains("\r\nTransfer-Encoding: chunked\r\n", StringComparison.OrdinalIgnoreCase), head);

        // A named end-to-end field is hop-by-hop for this request (RFC 9110 §7.6.1), and only that one.
        var hopNamed = token.Contains("X-Hop", StringComparison.Ordinal);
        Assert.True(!hopNamed == head.Contains("\r\nX-Hop: hop\r\n", StringComparison.Ordinal), head);
        Assert.Equal(token != "Content-Type", head.Contains("\r\nContent-Type: text/plain\r\n", StringComparison.OrdinalIgnoreCase));
        Assert.Equal(token != "Accept", head.Contains("\r\nAccept: */*\r\n", StringComparison.OrdinalIgnoreCase));
        Assert.False(head.Contains("\r\nX-Proxy:", StringComparison.OrdinalIgnoreCase), head);
    }

    public static TheoryData<string, string> ResponseTokens
    {
        get
        {
            var data = new TheoryData<string, string>();
            foreach (var forwarder in new[] { "http1", "yarp" })
            {
                foreach (var token in new[] { "Content-Length", "Transfer-Encoding", "X-Proxy", "X-Hop" })
                {
                    data.Add(forwarder, token);
                }
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(ResponseTokens))]
    public async Task A_backend_connection_token_never_desynchronises_the_client(string forwarder, string token)
    {
        // The first response names a framing field in Connection; the client's next response on the same
        // connection must still be its own.
        await using var backend = new RawBackend(request => request.Target == "/named"
            ? RawResponse.Text(token == "Transfer-Encoding"
                ? $"HTTP/1.1 200 OK\r\nConnection: {token}\r\nX-Hop: hop\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n/named\r\n0\r\n\r\n"
                : $"HTTP/1.1 200 OK\r\nConnection: {token}\r\nX-Hop: hop\r\nContent-Length: 6\r\n\r\n/named")
            : EchoTarget(request));
        await using var sidekick = await StartAsync(forwarder, backend.Url);

        var response = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, "GET /named HTTP/1.1\r\nHost: x\r\n\r\n", then: "GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
        Assert.Equal(200, response.Status);
        Assert.Equal("/named", response.Body);
        Assert.Equal("/next", response.Next!.Body);
        Assert.Equal(token != "X-Hop", response.Head.Contains("\r\nX-Hop: hop\r\n", StringComparison.OrdinalIgnoreCase));
        Assert.Contains("\r\nX-Proxy: true\r\n", response.Head, StringComparison.OrdinalIgnoreCase);
    }

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task An_error_answer_carries_no_exception_text(string forwarder)
    {
        // A backend that sends garbage: the client gets sidekick's 502, whose body names a fixed reason only.
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", close: true));
        var options = SidekickHarness.FastOptions with { MaxAttempts = 1 };
        var url = backend.Url.ToString().TrimEnd('/');
        await using var sidekick = await SidekickHarness.StartAsync(options, [new SiteDefinition(1, [new BackendDefinition(backend.Url, url, new Uri(url + "/health"))])],
            new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) });
        var response = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
        Assert.Equal(502, response.Status);
        Assert.Matches("<Message>The remote server returned an error \\((invalid response|connection closed early|connection reset|backend error)\\)</Message>", response.Body);
    }

    private static void AssertNoSmuggledRequest(RawBackend backend)
    {
        var seen = backend.Requests.ToArray();
        Assert.DoesNotContain(seen, r => r.Target == "/poison");
        var post = Assert.Single(seen, r => r.Method == "POST");
        Assert.Equal(Smuggled, Encoding.Latin1.GetString(post.Body));
        Assert.Contains($"\r\nContent-Length: {Smuggled.Length}\r\n", post.Head, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(5, seen.Length);

        // Byte for byte: the only request heads on the wire are those the clients sent, each with its own body.
        var wire = backend.ReceivedText();
        Assert.Equal(1, Count(wire, "GET /poison"));
        Assert.Equal(wire.Length, seen.Sum(r => r.Head.Length + r.Body.Length) + backend.ProbeHeads.Sum(h => h.Length));
    }

    private static RawResponse EchoTarget(RawRequest request) =>
        RawResponse.Text($"HTTP/1.1 200 OK\r\nContent-Length: {request.Target.Length}\r\n\r\n{request.Target}");

    private static int Count(string text, string part)
    {
        var count = 0;
        for (var at = text.IndexOf(part, StringComparison.Ordinal); at >= 0; at = text.IndexOf(part, at + part.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    private static Task<SidekickHarness> StartAsync(string forwarder, Uri backend)
    {
        var options = SidekickHarness.FastOptions;
        var url = backend.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(backend, url, new Uri(url + options.HealthPath))])];
        return SidekickHarness.StartAsync(options, sites, new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) });
    }
}
