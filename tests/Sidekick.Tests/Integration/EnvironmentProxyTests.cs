using Sidekick.Forwarding;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Integration;

/// <summary>
/// HTTP_PROXY is honoured for backend traffic as Go's ProxyFromEnvironment honours it, which never proxies localhost
/// or a loopback address: a sidecar's loopback backend must come up and serve with a proxy in the environment.
/// </summary>
public sealed class EnvironmentProxyTests
{
    [Fact]
    public async Task Loopback_backends_bypass_the_environment_proxy_and_other_names_still_use_it()
    {
        // The "proxy" records what it is sent and answers 502: a probe that went through it would keep a backend down.
        await using var proxy = new RawBackend(_ => RawResponse.Text("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"));
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        var backendPort = backend.Url.Port;
        var port = SidekickProcess.FreePort();
        var environment = new Dictionary<string, string>
        {
            ["HTTP_PROXY"] = proxy.Url.ToString(), ["http_proxy"] = proxy.Url.ToString(), ["NO_PROXY"] = "", ["no_proxy"] = "",
        };
        await using var sidekick = SidekickProcess.StartIn(Environment.CurrentDirectory, environment,
            "--health-path", "/health", "--health-duration", "200ms", "--address", $"127.0.0.1:{port}", "--trace", "",
            $"http://127.0.0.1:{backendPort},http://localhost:{backendPort}", "http://made-up-backend.example:9000");
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient();
        Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/bucket/object"));
        Assert.Contains(backend.Requests, r => r.Target == "/bucket/object");
        // Not through a proxy, so the proxy does not take it off sidekick's own HTTP/1.1 path (which the suite's YARP
        // pass turns off for everything: SIDEKICK_FORWARDER=yarp, counted as "forced").
        var metrics = await client.GetStringAsync($"http://127.0.0.1:{port}/.prometheus/metrics");
        Assert.Contains("sidekick_forwarded_total{path=\"yarp\",reason=\"http_proxy\"} 0\n", metrics, StringComparison.Ordinal);
        Assert.Contains(Environment.GetEnvironmentVariable("SIDEKICK_FORWARDER") == "yarp"
            ? "sidekick_forwarded_total{path=\"yarp\",reason=\"forced\"} 1\n"
            : "sidekick_forwarded_total{path=\"http1\",reason=\"plain\"} 1\n", metrics, StringComparison.Ordinal);
        // The second site is not on loopback: its probes reach the proxy, in absolute form.
        await Eventually.WaitUntilAsync(() => proxy.ReceivedText().Contains("GET http://made-up-backend.example:9000/health HTTP/1.1", StringComparison.Ordinal));
        Assert.DoesNotContain("127.0.0.1", proxy.ReceivedText().Replace($"Host: made-up-backend.example:9000", "", StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.DoesNotContain("localhost", proxy.ReceivedText(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_https_site_that_mixes_loopback_and_remote_backends_sends_only_the_loopback_ones_direct()
    {
        // The site's first backend is on loopback: once that decided for the whole site's connection pool, the remote
        // backend was sent direct too (past the operator's proxy), and here never reached the proxy at all.
        using var certificates = new Security.TestCertificates();
        var leaf = certificates.Leaf("backend");
        var (tlsBackend, tlsPort) = await Security.BackendTlsTests.StartTlsBackendAsync(leaf.Certificate, requireClientCa: null);
        await using var _ = tlsBackend;
        await using var proxy = new RawBackend(_ => RawResponse.Text("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"));
        var port = SidekickProcess.FreePort();
        var environment = new Dictionary<string, string>
        {
            ["HTTPS_PROXY"] = proxy.Url.ToString(), ["https_proxy"] = proxy.Url.ToString(), ["NO_PROXY"] = "", ["no_proxy"] = "",
        };
        await using var sidekick = SidekickProcess.StartIn(Environment.CurrentDirectory, environment,
            "--health-path", "/", "--health-duration", "200ms", "--address", $"127.0.0.1:{port}", "--trace", "", "--cacert", certificates.CaPath,
            $"https://localhost:{tlsPort},https://made-up-backend.example:9443");
        await sidekick.WaitForHealthAsync(port);

        // The remote backend's probes go through the proxy, as a tunnel; the loopback one is up (probed direct) and serves.
        await Eventually.WaitUntilAsync(() => proxy.ReceivedText().Contains("CONNECT made-up-backend.example:9443 HTTP/1.1", StringComparison.Ordinal),
            what: $"the remote backend's probe tunnelled through the proxy; the proxy received: {proxy.ReceivedText()}");
        using var client = new HttpClient();
        Assert.Equal("no client certificate", await client.GetStringAsync($"http://127.0.0.1:{port}/bucket/object"));
        Assert.DoesNotContain("localhost", proxy.ReceivedText(), StringComparison.Ordinal);
        Assert.DoesNotContain("127.0.0.1", proxy.ReceivedText(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://localhost:9000", true)]
    [InlineData("http://LOCALHOST:9000", true)]
    [InlineData("http://127.0.0.1:9000", true)]
    [InlineData("http://127.1.2.3:9000", true)]
    [InlineData("http://[::1]:9000", true)]
    [InlineData("https://[::ffff:127.0.0.1]:9000", true)]
    [InlineData("http://a.localhost:9000", false)] // Go bypasses only the name "localhost" itself
    [InlineData("http://minio1:9000", false)]
    [InlineData("http://10.0.0.1:9000", false)]
    public void Loopback_is_what_go_calls_loopback(string url, bool loopback) =>
        Assert.Equal(loopback, LoopbackBypassProxy.IsLoopback(new Uri(url)));
}
