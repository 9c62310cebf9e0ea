using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Integration;

/// <summary>
/// A WebSocket over HTTP/2 (an extended CONNECT, RFC 8441) goes to the backend as an HTTP/1.1 upgrade. A backend that
/// answers it with a 2xx instead of 101 declined the upgrade: over HTTP/1.1 that answer is relayed as it is, but over
/// HTTP/2 a 2xx to a CONNECT would say the tunnel is open (RFC 9110 §9.3.6). The client got a bare 500 from Kestrel
/// while the trace said 502; now both say 502, the answer of a proxy whose backend's response was unusable for the
/// request (RFC 9110 §15.6.3). The real process, with its trace on stdout.
/// </summary>
public sealed partial class Http2WebSocketRefusalTests
{
    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
    public async Task A_websocket_the_backend_answers_with_200_gets_the_same_502_the_trace_records(string answer)
    {
        await using var backend = new ScriptedBackend(async (head, socket, stop) =>
        {
            if (head.StartsWith("GET /health", StringComparison.Ordinal))
            {
                await ScriptedBackend.AnswerProbeAsync(socket, stop);
                return;
            }

            await socket.SendAsync(System.Text.Encoding.ASCII.GetBytes(answer), SocketFlags.None, stop);
        });

        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start(
            "--address", $"127.0.0.1:{port}", "--auto-tls-host", "127.0.0.1", "--health-path", "/health", "--trace", "application",
            backend.Url.ToString());
        await WaitUntilServingAsync(sidekick, port);

        var (status, body) = await RawHttp2Client.SendAsync(port, "CONNECT", "/ws", [(":protocol", "websocket"), ("sec-websocket-version", "13")]);

        var traced = await TracedStatusAsync(sidekick, "CONNECT");
        Assert.Equal(502, status);
        Assert.Equal(status, traced);
        Assert.Contains("did not switch to the WebSocket protocol", body, StringComparison.Ordinal);

        // The same backend's answer to an HTTP/1.1 upgrade is relayed: a server may decline an upgrade (RFC 9110 §7.8).
        using var client = new HttpClient(new SocketsHttpHandler
        {
            SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true },
        });
        using var upgrade = new HttpRequestMessage(HttpMethod.Get, $"https://127.0.0.1:{port}/ws");
        upgrade.Headers.TryAddWithoutValidation("Connection", "Upgrade");
        upgrade.Headers.TryAddWithoutValidation("Upgrade", "websocket");
        upgrade.Headers.TryAddWithoutValidation("Sec-WebSocket-Version", "13");
        upgrade.Headers.TryAddWithoutValidation("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        using var relayed = await client.SendAsync(upgrade);
        Assert.Equal(HttpStatusCode.OK, relayed.StatusCode);
        Assert.Equal(200, await TracedStatusAsync(sidekick, "GET"));
    }

    /// <summary>Until the backend is up (the health endpoint answers 200 once a probe succeeded).</summary>
    private static async Task WaitUntilServingAsync(SidekickProcess sidekick, int port)
    {
        using var client = new HttpClient(new SocketsHttpHandler
        {
            SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true },
        });
        var deadline = Environment.TickCount64 + 30_000;
        while (true)
        {
            Assert.False(sidekick.Process.HasExited, "sidekick exited: " + sidekick.Stderr);
            try
            {
                using var response = await client.GetAsync($"https://127.0.0.1:{port}/v1/health");
                if (response.IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }

            Assert.True(Environment.TickCount64 < deadline, "sidekick did not become healthy: " + sidekick.Stdout + sidekick.Stderr);
            await Task.Delay(50);
        }
    }

    /// <summary>The status of the trace line for <paramref name="method"/> /ws, once it is printed.</summary>
    private static async Task<int> TracedStatusAsync(SidekickProcess sidekick, string method)
    {
        Match? line = null;
        await Eventually.WaitUntilAsync(
            () => (line = TraceLine().Matches(sidekick.Stdout).FirstOrDefault(m => m.Groups["method"].Value == method)) is not null,
            timeoutMs: 15_000, what: $"a trace line for {method} /ws");
        return int.Parse(line!.Groups["status"].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    [GeneratedRegex(@"\[(?<status>\d{3}) [^\]]*\]\s+\S+ (?<method>[A-Z]+) /ws ")]
    private static partial Regex TraceLine();
}
