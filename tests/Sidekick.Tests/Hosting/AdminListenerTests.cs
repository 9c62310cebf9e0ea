using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text.Json;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Hosting;

/// <summary>
/// --admin-address moves the state, the metrics, the certificates and --pprof's routes to a listener of their
/// own, and the same paths on the proxy port then reach the backends like any other. Without it, upstream's layout
/// stays, but only a raw target that is exactly a local path is answered by sidekick: anything else, dot segments
/// and absolute forms included, is a key for the backend.
/// </summary>
public sealed class AdminListenerTests
{
    [Fact]
    public async Task With_an_admin_address_state_and_metrics_answer_there_and_the_proxy_port_forwards_the_same_paths()
    {
        await using var a = await TestBackend.StartAsync("a");
        var options = SidekickHarness.FastOptions with { AdminAddress = "127.0.0.1:0" };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        var admin = sidekick.Server.AdminAddress!;
        Assert.NotEqual(sidekick.BaseAddress.Port, admin.Port);
        using var client = new HttpClient { BaseAddress = admin };

        var state = JsonDocument.Parse(await client.GetStringAsync("/v1/state")).RootElement;
        Assert.Equal(1, state.GetProperty("activeSite").GetInt32());
        Assert.Contains("sidekick_requests_total", await client.GetStringAsync("/.prometheus/metrics"), StringComparison.Ordinal);
        using (var certificates = await client.GetAsync("/v1/certificates"))
        {
            Assert.Equal(HttpStatusCode.NotFound, certificates.StatusCode);
            Assert.Equal("no configured certificates found\n", await certificates.Content.ReadAsStringAsync());
        }

        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v1/health")).StatusCode);

        // On the proxy port the same paths are S3 keys like any other: the backend answers them.
        foreach (var path in new[] { "/v1/state", "/.prometheus/metrics", "/v1/certificates" })
        {
            using var proxied = await sidekick.Client.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, proxied.StatusCode);
            Assert.Equal("a", proxied.Headers.GetValues("X-Backend").Single());
            Assert.Equal("a", await proxied.Content.ReadAsStringAsync());
            Assert.Contains(a.Seen, r => r.RawTarget == path);
        }

        // /v1/health stays on the proxy port, answered by sidekick, as upstream.
        var hits = a.Hits;
        using (var health = await sidekick.Client.GetAsync("/v1/health"))
        {
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            Assert.False(health.Headers.Contains("X-Backend"));
        }

        // The admin listener never proxies.
        using (var other = await client.GetAsync("/bucket/key"))
        {
            Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
            Assert.StartsWith("not an admin path", await other.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.Equal(hits, a.Hits);
    }

    [Fact]
    public async Task Without_an_admin_address_only_the_exact_raw_target_is_local()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        var port = sidekick.BaseAddress.Port;

        var state = await RawClient.ExchangeAsync(port, "GET /v1/state HTTP/1.1\r\nHost: s3\r\n\r\n");
        Assert.Equal(200, state.Status);
        Assert.Equal(1, JsonDocument.Parse(state.Body).RootElement.GetProperty("activeSite").GetInt32());

        // Kestrel's Path would be /v1/state for each of these; the backend must get them byte for byte.
        foreach (var target in new[] { "/a/../../v1/state", "/v1/./state", "//v1/state", "/v1/%73tate", "/x/../.prometheus/metrics" })
        {
            var answer = await RawClient.ExchangeAsync(port, $"GET {target} HTTP/1.1\r\nHost: s3\r\n\r\n");
            Assert.Equal(200, answer.Status);
            Assert.Equal("a", answer.Body);
            Assert.Contains(a.Seen, r => r.RawTarget == target);
        }

        // The absolute form is never sidekick's own state: it is a key, and reaches the backend in origin form.
        var absolute = await RawClient.ExchangeAsync(port, "GET http://s3/v1/state HTTP/1.1\r\nHost: s3\r\n\r\n");
        Assert.Equal(200, absolute.Status);
        Assert.Equal("a", absolute.Body);
        Assert.Contains(a.Seen, r => r.RawTarget == "/v1/state");

        // A query does not make a local path remote (upstream matched the path alone).
        var hits = a.Hits;
        Assert.Equal(200, (await RawClient.ExchangeAsync(port, "GET /v1/health?probe=1 HTTP/1.1\r\nHost: s3\r\n\r\n")).Status);
        var metrics = await RawClient.ExchangeAsync(port, "GET /.prometheus/metrics?x HTTP/1.1\r\nHost: s3\r\n\r\n");
        Assert.Contains("sidekick_requests_total", metrics.Body, StringComparison.Ordinal);
        Assert.Equal(hits, a.Hits);
    }

    [Fact]
    public async Task The_metrics_answer_reads_only_and_other_methods_go_where_they_go_for_the_state()
    {
        await using var a = await TestBackend.StartAsync("a");
        var options = SidekickHarness.FastOptions with { AdminAddress = "127.0.0.1:0" };
        await using (var withAdmin = await SidekickHarness.StartAsync(options, [a]))
        {
            var admin = withAdmin.Server.AdminAddress!.Port;
            Assert.Contains("sidekick_requests_total", (await RawClient.ExchangeAsync(admin, "GET /.prometheus/metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")).Body, StringComparison.Ordinal);
            using var client = new HttpClient { BaseAddress = withAdmin.Server.AdminAddress };
            using var head = await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, LocalEndpoints.MetricsPath));
            Assert.Equal(HttpStatusCode.OK, head.StatusCode);
            foreach (var method in new[] { "PUT", "POST", "DELETE", "PATCH" })
            {
                var answer = await RawClient.ExchangeAsync(admin, $"{method} /.prometheus/metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
                Assert.Equal(404, answer.Status);
                Assert.StartsWith("not an admin path", answer.Body, StringComparison.Ordinal);
            }
        }

        // Without --admin-address a write to the path is an S3 request: the backend gets it, as a PUT /v1/state.
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        var port = sidekick.BaseAddress.Port;
        using (var head = await sidekick.Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, LocalEndpoints.MetricsPath)))
        {
            Assert.Equal(HttpStatusCode.OK, head.StatusCode);
            Assert.False(head.Headers.Contains("X-Backend"));
        }

        foreach (var method in new[] { "PUT", "POST", "DELETE" })
        {
            var hits = a.Seen.Count(r => r.Method == method && r.RawTarget == LocalEndpoints.MetricsPath);
            var answer = await RawClient.ExchangeAsync(port, $"{method} /.prometheus/metrics HTTP/1.1\r\nHost: s3\r\nContent-Length: 0\r\n\r\n");
            Assert.Equal("a", answer.Body);
            Assert.Equal(hits + 1, a.Seen.Count(r => r.Method == method && r.RawTarget == LocalEndpoints.MetricsPath));
        }
    }

    [Fact]
    public async Task With_an_admin_address_pprof_routes_move_there_and_pprofs_own_address_is_not_bound()
    {
        await using var a = await TestBackend.StartAsync("a");
        var pprofPort = SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with { AdminAddress = "127.0.0.1:0", Pprof = $"127.0.0.1:{pprofPort}" };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        using var client = new HttpClient { BaseAddress = sidekick.Server.AdminAddress };
        var gc = JsonDocument.Parse(await client.GetStringAsync("/debug/gc")).RootElement;
        Assert.True(gc.GetProperty("heapSizeBytes").GetInt64() > 0);
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync("/debug/gc/collect", null)).StatusCode);

        using var probe = new TcpClient();
        var refused = await Assert.ThrowsAsync<SocketException>(() => probe.ConnectAsync(IPAddress.Loopback, pprofPort));
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);

        // The proxy port forwards /debug/ paths: they are keys like any other.
        using var proxied = await sidekick.Client.GetAsync("/debug/gc");
        Assert.Equal("a", await proxied.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_listener_on_loopback_answers_only_requests_naming_a_loopback_host()
    {
        // DNS rebinding: a page at evil.example, its name pointed at 127.0.0.1, reads what the operator's browser fetches
        // for it; its requests name evil.example. A form POST needs no such trick: it only has to reach the port.
        await using var a = await TestBackend.StartAsync("a");
        var options = SidekickHarness.FastOptions with { AdminAddress = "127.0.0.1:0", Pprof = $"127.0.0.1:{SidekickProcess.FreePort()}" };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        var admin = sidekick.Server.AdminAddress!;

        foreach (var (host, path, method) in new[] { ("evil.example", "/v1/state", "GET"), ($"evil.example:{admin.Port}", "/.prometheus/metrics", "GET"), ("evil.example", "/debug/gc/collect", "POST") })
        {
            var answer = await RawClient.ExchangeAsync(admin.Port, $"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
            Assert.Equal(421, answer.Status);
            Assert.DoesNotContain("sidekick_", answer.Body, StringComparison.Ordinal);
            Assert.DoesNotContain(a.Url.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), answer.Body, StringComparison.Ordinal);
        }

        foreach (var host in new[] { "localhost", $"localhost:{admin.Port}", $"127.0.0.1:{admin.Port}", "127.8.9.10", "[::1]", $"[::1]:{admin.Port}" })
        {
            var answer = await RawClient.ExchangeAsync(admin.Port, $"GET /v1/state HTTP/1.1\r\nHost: {host}\r\n\r\n");
            Assert.Equal((host, 200), (host, answer.Status));
        }

        // An HTTP/1.0 health checker sends no Host at all; no browser does that.
        Assert.Equal(200, (await RawClient.ExchangeAsync(admin.Port, "GET /v1/health HTTP/1.0\r\n\r\n")).Status);

        // A forced collection must name a loopback host too, wherever the diagnostics listen.
        var posted = await RawClient.ExchangeAsync(admin.Port, "POST /debug/gc/collect HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
        Assert.Equal(200, posted.Status);
    }

    [NonLoopbackAddressFact]
    public async Task A_forced_collection_is_refused_to_clients_on_other_hosts()
    {
        await using var a = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with { Pprof = $"0.0.0.0:{port}" };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);
        using var client = new HttpClient();
        // Through the host's own network address the client is not on loopback, as a client on another host would not be.
        var remote = await client.PostAsync($"http://{NonLoopbackAddressFactAttribute.Address}:{port}/debug/gc/collect", null);
        Assert.Equal(HttpStatusCode.Forbidden, remote.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync($"http://{NonLoopbackAddressFactAttribute.Address}:{port}/debug/gc")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"http://127.0.0.1:{port}/debug/gc/collect", null)).StatusCode);
    }

    [Theory]
    [InlineData("epoll")]
    [InlineData("dotnet")]
    public async Task The_admin_listener_works_on_both_socket_engines(string io)
    {
        await using var a = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        var adminPort = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.StartIn(Environment.CurrentDirectory, new Dictionary<string, string> { ["SIDEKICK_IO"] = io },
            "--address", $"127.0.0.1:{port}", "--admin-address", $":{adminPort}", "--health-path", "/health", a.Url.ToString().TrimEnd('/'));
        await sidekick.WaitForHealthAsync(port);
        using var client = new HttpClient();
        // ":PORT" is the loopback address for the admin listener.
        var state = JsonDocument.Parse(await client.GetStringAsync($"http://127.0.0.1:{adminPort}/v1/state")).RootElement;
        Assert.Equal(1, state.GetProperty("activeSite").GetInt32());
        Assert.Equal("a", await client.GetStringAsync($"http://127.0.0.1:{port}/v1/state"));
        // Printed once the listeners accept, so a healthy answer may come first; and stdout reaches the test through a pipe.
        await Eventually.WaitUntilAsync(() => sidekick.Stdout.Contains($"admin endpoints (state, metrics, certificates) on '127.0.0.1:{adminPort}'", StringComparison.Ordinal),
            what: "the admin endpoints' line");
        if (NonLoopbackAddressFactAttribute.Address is { } network)
        {
            using var outside = new TcpClient();
            await Assert.ThrowsAsync<SocketException>(() => outside.ConnectAsync(network, adminPort));
        }
    }

    [Fact]
    public async Task A_bad_admin_address_is_a_usage_error_in_one_line()
    {
        var run = await SidekickProcess.RunAsync("--admin-address", "9091", "http://127.0.0.1:1");
        AssertOneLine(2, "sidekick: invalid --admin-address \"9091\": expected host:port, e.g. \":8080\" or \"127.0.0.1:8080\" (see 'sidekick --help')", run);
    }

    [Theory]
    [InlineData("epoll")]
    [InlineData("dotnet")]
    public async Task A_busy_admin_port_is_one_line_naming_the_flag(string io)
    {
        using var blocker = new TcpListener(IPAddress.Loopback, 0);
        blocker.Start();
        var busy = ((IPEndPoint)blocker.LocalEndpoint).Port;
        var port = SidekickProcess.FreePort();
        var run = await SidekickProcess.RunAsync(new Dictionary<string, string> { ["SIDEKICK_IO"] = io },
            "--address", $"127.0.0.1:{port}", "--admin-address", $":{busy}", "http://127.0.0.1:1");
        AssertOneLine(1, $"sidekick: unable to listen on \":{busy}\" (--admin-address): port {busy} is already in use by another process", run);
    }

    private static void AssertOneLine(int expectedCode, string expectedLine, (int ExitCode, string Stdout, string Stderr) run)
    {
        Assert.Equal(expectedLine, run.Stderr.ReplaceLineEndings("\n").TrimEnd('\n'));
        Assert.Equal(string.Empty, run.Stdout.Trim());
        Assert.Equal(expectedCode, run.ExitCode);
    }
}

/// <summary>A test that needs an address of this host other than loopback (to be a client that is not local).</summary>
public sealed class NonLoopbackAddressFactAttribute : FactAttribute
{
    public NonLoopbackAddressFactAttribute() => Skip = Address is null ? "this host has no IPv4 address besides loopback" : null;

    public static IPAddress? Address { get; } = NetworkInterface.GetAllNetworkInterfaces()
        .Where(i => i.OperationalStatus == OperationalStatus.Up)
        .SelectMany(i => i.GetIPProperties().UnicastAddresses)
        .Select(u => u.Address)
        .FirstOrDefault(ip => ip.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(ip));
}
