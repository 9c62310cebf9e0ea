using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Sidekick.Tests.Integration;

/// <summary>Request smuggling and malformed input: rejected at the edge, never forwarded ambiguously.</summary>
public sealed class HostileInputTests : IAsyncLifetime
{
    private TestBackend _backend = null!;
    private SidekickHarness _sidekick = null!;

    public async Task InitializeAsync()
    {
        _backend = await TestBackend.StartAsync("a");
        _sidekick = await SidekickHarness.StartAsync([_backend]);
    }

    public async Task DisposeAsync()
    {
        await _sidekick.DisposeAsync();
        await _backend.DisposeAsync();
    }

    public static TheoryData<string, string> Vectors => new()
    {
        { "conflicting Content-Length", "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!" },
        { "Content-Length with Transfer-Encoding", "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" },
        { "obs-fold", "GET /x HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n" },
        { "bad chunk size", "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n" },
        { "NUL in header", "GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n" },
        { "bare CR in header", "GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n" },
        { "absolute-form target naming another host", "GET http://evil.example/x HTTP/1.1\r\nHost: h\r\n\r\n" },
        { "absolute-form target with user information", "GET http://user@h/x HTTP/1.1\r\nHost: h\r\n\r\n" },
        { "absolute-form target of another scheme", "GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n" },
        { "space before colon", "GET /x HTTP/1.1\r\nHost: h\r\nX-A : b\r\n\r\n" },
        { "missing Host", "GET /x HTTP/1.1\r\n\r\n" },
        { "Host port beyond 65535", "GET /x HTTP/1.1\r\nHost: h:99999\r\n\r\n" },
        { "Host port beyond 2^32", "GET /x HTTP/1.1\r\nHost: h:4294967377\r\n\r\n" },
        { "huge header", "GET /x HTTP/1.1\r\nHost: h\r\nX-A: " + new string('a', 200_000) + "\r\n\r\n" },
        { "unknown transfer coding", "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n0\r\n\r\n" },
        // Kestrel takes these in an HTTP/1.1 target; a backend ending lines at a bare CR would read a field after it.
        { "bare CR in the target", "GET /a\rTransfer-Encoding: chunked HTTP/1.1\r\nHost: h\r\n\r\n" },
        { "TAB in the target", "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n" },
        { "control in the target", "GET /a\u0001b HTTP/1.1\r\nHost: h\r\n\r\n" },
        { "DEL in the target", "GET /a\u007fb HTTP/1.1\r\nHost: h\r\n\r\n" },
    };

    [Theory]
    [MemberData(nameof(Vectors))]
    public async Task Vector_is_rejected_and_not_forwarded(string name, string request)
    {
        var before = _backend.Hits;
        var status = await SendAsync(request);
        Assert.True(status is >= 400 and < 500, $"{name}: got {status}");
        if (name != "bad chunk size")
        {
            // A bad chunk is only seen while streaming the body, after the headers went out; the backend then
            // sees an aborted request, never a complete one. Everything else must not reach it at all.
            Assert.Equal(before, _backend.Hits);
        }
    }

    [Theory]
    [InlineData("GET http://h/bucket/key?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", "/bucket/key?x=1")]
    [InlineData("GET https://h:9000/bucket/%41key HTTP/1.1\r\nHost: h:9000\r\n\r\n", "/bucket/%41key")]
    [InlineData("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", "/")]
    [InlineData("GET http://h?list HTTP/1.1\r\nHost: h\r\n\r\n", "/?list")]
    public async Task An_absolute_form_target_naming_the_Host_reaches_the_backend_in_origin_form(string request, string expected)
    {
        // RFC 9112 §3.2.2: a server must accept the absolute form (Go's server, so upstream sidekick, does); the
        // backend gets the path and query as the client wrote them, which is what a SigV4 signature covers.
        var before = _backend.Seen.Count;
        Assert.Equal(200, await SendAsync(request));
        var seen = _backend.Seen.Skip(before).Single(r => !r.RawTarget.StartsWith("/health", StringComparison.Ordinal));
        Assert.Equal(expected, seen.RawTarget);
        Assert.Equal(request.Split("Host: ")[1].Split("\r\n")[0], seen.Headers["Host"]);
    }

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task A_field_name_with_a_control_character_never_reaches_the_backend(string forwarder)
    {
        // Kestrel's HTTP/1.1 parser takes it; HttpClient (YARP's path) leaves such a field out, and so does ours.
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        var url = backend.Url.ToString().TrimEnd('/');
        Sidekick.Topology.SiteDefinition[] sites = [new(1, [new Sidekick.Topology.BackendDefinition(backend.Url, url, new Uri(url + "/health"))])];
        await using var sidekick = await SidekickHarness.StartAsync(SidekickHarness.FastOptions, sites,
            new Sidekick.Hosting.SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) });

        var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, "GET /n HTTP/1.1\r\nHost: h\r\nX\u0001A: a\r\nX-B: b\r\n\r\n");

        Assert.Equal(200, answer.Status);
        var head = Assert.Single(backend.Requests).Head;
        Assert.Contains("\r\nX-B: b\r\n", head, StringComparison.Ordinal);
        Assert.DoesNotContain("\u0001", head, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_backend_sending_garbage_gets_the_client_a_clean_502()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var serve = Task.Run(async () =>
        {
            while (true)
            {
                using var socket = await listener.AcceptSocketAsync();
                var buffer = new byte[4096];
                await socket.ReceiveAsync(buffer);
                await socket.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n"u8.ToArray());
            }
        });

        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5), MaxAttempts = 1 };
        var definitions = new[] { new Sidekick.Topology.SiteDefinition(1, [new Sidekick.Topology.BackendDefinition(new Uri($"http://127.0.0.1:{port}"), $"http://127.0.0.1:{port}", new Uri($"http://127.0.0.1:{_backend.Port}/health"))]) };
        await using var server = Sidekick.Hosting.SidekickServer.Create(options, () => definitions);
        await server.StartAsync();
        await _sidekick.WaitUntilAsync(() => server.Topology.Current.ActiveSite is not null);
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(20) };
        using var response = await client.GetAsync("/x");
        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        await server.StopAsync();
        listener.Stop();
    }

    private async Task<int> SendAsync(string request)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, _sidekick.BaseAddress.Port);
        var stream = tcp.GetStream();
        try
        {
            await stream.WriteAsync(Encoding.Latin1.GetBytes(request));
        }
        catch (IOException)
        {
            // The server may close before the whole request was written; the status is still readable.
        }

        var buffer = new byte[1024];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var read = await stream.ReadAsync(buffer, timeout.Token);
        var line = Encoding.ASCII.GetString(buffer, 0, read);
        return int.Parse(line.AsSpan(9, 3), System.Globalization.CultureInfo.InvariantCulture);
    }
}
