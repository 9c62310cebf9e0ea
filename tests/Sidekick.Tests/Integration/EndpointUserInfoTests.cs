using System.Text;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Integration;

/// <summary>
/// A SITE endpoint with user information (<c>http://user:password@host</c>), which Go's sidekick accepts: through the
/// real process, its health probes carry the credentials as HTTP Basic auth, proxied requests never do (they keep the
/// client's own Authorization, or none), and the password shows nowhere: not in /v1/state, the metrics, the --log and
/// --trace lines (text or JSON, --debug included) or the warning about the endpoint's ignored query.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class EndpointUserInfoTests
{
    private const string User = "minio";
    private const string Password = "pa55w0rd-hunter2";

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public async Task Probes_carry_the_credentials_requests_and_output_never_do(bool json, bool debug)
    {
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        var backendPort = backend.Url.Port;
        var shown = $"http://127.0.0.1:{backendPort}";
        var basic = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{User}:{Password}"));
        var port = SidekickProcess.FreePort();
        string[] args =
        [
            "--address", $"127.0.0.1:{port}", "--health-path", "/health", "--health-duration", "200ms", "--log", "--trace", "all",
            .. json ? new[] { "--json" } : [], .. debug ? new[] { "--debug" } : [],
            $"http://{User}:{Password}@127.0.0.1:{backendPort}/?tok=querysecret",
        ];
        await using var sidekick = SidekickProcess.Start(args);
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient();
        using (var plain = await client.GetAsync($"http://127.0.0.1:{port}/bucket/plain?x=1"))
        {
            Assert.Equal("ok", await plain.Content.ReadAsStringAsync());
        }

        using (var own = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/bucket/own"))
        {
            own.Headers.TryAddWithoutValidation("Authorization", "AWS4-HMAC-SHA256 Credential=client/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=abc");
            using var response = await client.SendAsync(own);
            Assert.Equal("ok", await response.Content.ReadAsStringAsync());
        }

        var state = await client.GetStringAsync($"http://127.0.0.1:{port}/v1/state");
        var metrics = await client.GetStringAsync($"http://127.0.0.1:{port}/.prometheus/metrics");
        Assert.Contains($"\"{shown}\"", state, StringComparison.Ordinal);
        Assert.Contains($"\"{shown}\"", metrics, StringComparison.Ordinal);

        // On the wire: every probe with the endpoint's credentials, the requests with the client's path and query and
        // their own Authorization or none.
        Assert.NotEmpty(backend.ProbeHeads);
        Assert.All(backend.ProbeHeads, head =>
        {
            Assert.StartsWith("GET /health HTTP/1.1\r\n", head, StringComparison.Ordinal);
            Assert.Contains($"\r\nAuthorization: {basic}\r\n", head, StringComparison.Ordinal);
        });
        var requests = backend.Requests.ToArray();
        Assert.Equal(["/bucket/plain?x=1", "/bucket/own"], requests.Select(r => r.Target));
        Assert.DoesNotContain("authorization:", requests[0].Head, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("\r\nAuthorization: AWS4-HMAC-SHA256 Credential=client/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=abc\r\n",
            requests[1].Head, StringComparison.Ordinal);
        Assert.Single(requests[1].Head.Split("\r\n"), line => line.StartsWith("Authorization:", StringComparison.OrdinalIgnoreCase));
        var received = backend.ReceivedText();
        Assert.Equal(backend.ProbeHeads.Count, CountOf(received, basic));
        Assert.DoesNotContain("querysecret", received, StringComparison.Ordinal);

        sidekick.Signal("TERM");
        await sidekick.Process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        sidekick.Process.WaitForExit();
        var output = sidekick.Stdout + sidekick.Stderr;
        // One warning line, printed once (reloads and probes parse the SITEs again).
        Assert.Single(sidekick.Stderr.Split('\n'), line => line.Contains("warning: SITE 1: the query and fragment of endpoint", StringComparison.Ordinal));
        Assert.Contains(shown, sidekick.Stdout, StringComparison.Ordinal);
        foreach (var text in (string[])[output, state, metrics])
        {
            Assert.DoesNotContain(Password, text, StringComparison.Ordinal);
            Assert.DoesNotContain(basic[6..], text, StringComparison.Ordinal);
            Assert.DoesNotContain($"{User}:", text, StringComparison.Ordinal);
            Assert.DoesNotContain("@127.0.0.1", text, StringComparison.Ordinal);
            Assert.DoesNotContain("querysecret", text, StringComparison.Ordinal);
        }
    }

    private static int CountOf(string text, string value)
    {
        var count = 0;
        for (var at = text.IndexOf(value, StringComparison.Ordinal); at >= 0; at = text.IndexOf(value, at + 1, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }
}
