using System.Globalization;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Integration;

/// <summary>
/// The real process under a small open-files limit (prlimit, soft and hard), filled with client connections until
/// accept fails with EMFILE. What must hold: accept waits and retries rather than spinning, a request that needs a
/// backend socket then is answered 503 SlowDown without reaching or marking down any backend, and everything is
/// served again once descriptors are free. Each step waits for the state it checks (an answer, a log line).
/// </summary>
public sealed class SocketShortageTests
{
    // Room for what the .NET host opens at start (about 150 descriptors: it keeps its assemblies open) and a few dozen
    // clients. Probes keep their default period: their one connection then never idles out, and no descriptor is
    // freed behind the test's back (the backend's own connections close after each answer).
    private const int Limit = 220;

    [Fact]
    public async Task Out_of_descriptors_clients_wait_a_request_gets_503_and_no_backend_is_marked_down()
    {
        await using var backend = new RawBackend(request => request.Target == "/broken"
            ? new RawResponse([], Close: true)
            : RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", close: true));
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.StartUnder(["prlimit", $"--nofile={Limit}:{Limit}", "--"], Environment.CurrentDirectory,
            new Dictionary<string, string>(), "--address", $"127.0.0.1:{port}", "--log", "--max-connections", "100000", "--health-path=/health",
            backend.Url.ToString().TrimEnd('/'));
        await sidekick.WaitForHealthAsync(port);
        // Every code path of the steps below runs once first (a failed exchange's included): the .NET host loads an
        // assembly on a first use, and a load that fails for want of a descriptor is never tried again (the shipped
        // Native AOT binary loads nothing).
        Assert.Equal(200, (await RawClient.ExchangeAsync(port, "GET /warm HTTP/1.1\r\nHost: h\r\n\r\n")).Status);
        Assert.Equal(502, (await RawClient.ExchangeAsync(port, "GET /broken HTTP/1.1\r\nHost: h\r\n\r\n")).Status);
        Assert.Equal(200, (await RawClient.ExchangeAsync(port, "GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n")).Status);
        var backendRequests = backend.Requests.Count;
        var backendErrors = BackendErrors((await RawClient.ExchangeAsync(port, "GET /.prometheus/metrics HTTP/1.1\r\nHost: h\r\n\r\n")).Body);

        var held = new List<HeldConnection>();
        try
        {
            // Clients that each hold a descriptor, until one is not accepted: its request waits, and the line says why.
            const string acceptLine = "out of file descriptors (the open-files limit is 220): new client connections wait";
            var lineSeen = Eventually.WaitUntilAsync(() => sidekick.Stdout.Contains(acceptLine, StringComparison.Ordinal), timeoutMs: 120_000);
            HeldConnection? queued = null;
            Task<(int Status, string Head, string Body)>? queuedAnswer = null;
            while (queued is null)
            {
                Assert.True(held.Count < Limit, "every client was accepted: the limit did not apply");
                var client = await HeldConnection.OpenAsync(port);
                var answer = client.ExchangeAsync("GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n");
                if (await Task.WhenAny(answer, lineSeen) == answer)
                {
                    Assert.Equal(200, (await answer).Status);
                    held.Add(client);
                }
                else
                {
                    (queued, queuedAnswer) = (client, answer);
                }
            }

            // One client leaves: its descriptor goes to the waiting one, which is then served.
            held[0].Dispose();
            held.RemoveAt(0);
            Assert.Equal(200, (await queuedAnswer!).Status);

            // At the limit again: the backend needs a socket sidekick cannot have. 503 SlowDown (retried by S3 clients),
            // nothing sent to the backend, and the backend not marked down.
            var refused = await queued.ExchangeAsync("GET /object HTTP/1.1\r\nHost: h\r\n\r\n");
            Assert.Equal(503, refused.Status);
            Assert.Contains("\r\nRetry-After: 1\r\n", refused.Head, StringComparison.Ordinal);
            Assert.Contains("<Code>SlowDown</Code><Message>sidekick is out of file descriptors (the open-files limit is 220); retry shortly</Message>", refused.Body, StringComparison.Ordinal);
            Assert.Equal(backendRequests, backend.Requests.Count);

            // Descriptors back: the same client's next request is served by the backend.
            foreach (var client in held)
            {
                client.Dispose();
            }

            held.Clear();
            // (sidekick closes those connections as it reads their ends: until then a request may still meet the shortage.)
            var deadline = Environment.TickCount64 + 60_000;
            (int Status, string Head, string Body) served;
            while ((served = await queued.ExchangeAsync("GET /object HTTP/1.1\r\nHost: h\r\n\r\n")).Status == 503 && Environment.TickCount64 < deadline)
            {
                await Task.Delay(50);
            }

            Assert.Equal((200, "ok"), (served.Status, served.Body));
            queued.Dispose();
        }
        finally
        {
            foreach (var client in held)
            {
                client.Dispose();
            }
        }

        await Eventually.WaitUntilAsync(() => sidekick.Stdout.Contains("a request was answered 503 SlowDown, and no backend was marked down", StringComparison.Ordinal));
        Assert.DoesNotContain(" is down", sidekick.Stdout, StringComparison.Ordinal);
        // The trace shows the 503 the client got, never a 502 from the backend (trace lines are written by another thread).
        bool Traced(string status) => sidekick.Stdout.Split('\n').Any(line => line.Contains(status, StringComparison.Ordinal) && line.Contains("GET /object", StringComparison.Ordinal));
        await Eventually.WaitUntilAsync(() => Traced("[503 Service Unavailable]"));
        Assert.False(Traced("[502 "));
        var metrics = (await RawClient.ExchangeAsync(port, "GET /.prometheus/metrics HTTP/1.1\r\nHost: h\r\n\r\n")).Body;
        // Retried with backoff while the clients held their descriptors (about a second or two): a handful of failed
        // accepts; an accept loop that asks again at once fails thousands of times a second.
        var failedAccepts = Sample(metrics, "sidekick_socket_shortages_total{during=\"accept\"}");
        Assert.InRange(failedAccepts, 1, 999);
        Assert.True(Sample(metrics, "sidekick_socket_shortages_total{during=\"backend\"}") >= 1, metrics);
        // The backend's own statistics did not count the request it never got.
        Assert.Equal(backendErrors, BackendErrors(metrics));
    }

    private static string BackendErrors(string metrics) =>
        metrics.Split('\n').Single(line => line.StartsWith("sidekick_errors_total{", StringComparison.Ordinal)).Split(' ')[^1];

    private static long Sample(string metrics, string series) =>
        long.Parse(metrics.Split('\n').Single(line => line.StartsWith(series + " ", StringComparison.Ordinal))[(series.Length + 1)..], CultureInfo.InvariantCulture);

    /// <summary>A client connection kept open across requests.</summary>
    private sealed class HeldConnection : IDisposable
    {
        private readonly TcpClient _tcp;
        private readonly CancellationTokenSource _timeout = new(TimeSpan.FromMinutes(3));
        private readonly RawClient.ResponseReader _reader;

        private HeldConnection(TcpClient tcp)
        {
            _tcp = tcp;
            _reader = new RawClient.ResponseReader(tcp.GetStream(), _timeout.Token);
        }

        public static async Task<HeldConnection> OpenAsync(int port)
        {
            var tcp = new TcpClient();
            await tcp.ConnectAsync(IPAddress.Loopback, port);
            return new HeldConnection(tcp);
        }

        public async Task<(int Status, string Head, string Body)> ExchangeAsync(string request)
        {
            await _tcp.GetStream().WriteAsync(Encoding.Latin1.GetBytes(request), _timeout.Token);
            return await _reader.ReadAsync();
        }

        public void Dispose()
        {
            _tcp.Dispose();
            _timeout.Dispose();
        }
    }

    /// <summary>
    /// The shortage comes before a loopback client's first proxied request (a sidecar's usual client), which reports
    /// the host's own address in X-Forwarded-For: its look-up reads /proc/net/route, and failing for want of a descriptor
    /// it was kept, so every loopback client got a bare 500 for the life of the process (found by a docs review).
    /// The address is now found at start, and a failed look-up is tried again later.
    /// </summary>
    [Fact]
    public async Task A_shortage_before_the_first_loopback_request_leaves_loopback_clients_served_once_it_ends()
    {
        await using var backend = new RawBackend(_ =>
            RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", close: true));
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.StartUnder(["prlimit", $"--nofile={Limit}:{Limit}", "--"], Environment.CurrentDirectory,
            new Dictionary<string, string>(), "--address", $"0.0.0.0:{port}", "--log", "--max-connections", "100000",
            "--health-path=/health", backend.Url.ToString().TrimEnd('/'));
        await sidekick.WaitForHealthAsync(port);

        // Warm the proxy path (the .NET host loads assemblies on first use) from a non-loopback address of this host,
        // which does not need the host address; only the loopback client's first request does.
        if (NonLoopbackAddress() is { } external)
        {
            using var warm = new TcpClient();
            await warm.ConnectAsync(external, port);
            var stream = warm.GetStream();
            await stream.WriteAsync(Encoding.Latin1.GetBytes("GET /warm HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
            var answer = await new StreamReader(stream, Encoding.Latin1).ReadToEndAsync();
            Assert.StartsWith("HTTP/1.1 200", answer, StringComparison.Ordinal);
        }

        var held = new List<TcpClient>();
        try
        {
            const string acceptLine = "out of file descriptors";
            while (!sidekick.Stdout.Contains(acceptLine, StringComparison.Ordinal))
            {
                Assert.True(held.Count < Limit, "every client was accepted: the limit did not apply");
                var client = new TcpClient();
                await client.ConnectAsync(IPAddress.Loopback, port);
                held.Add(client);
                if (held.Count > 150)
                {
                    await Task.Delay(20);
                }
            }

            // During the shortage, a loopback client's first proxied request, on a connection already accepted.
            var during = await RawExchangeAsync(held[0], "GET /object HTTP/1.1\r\nHost: h\r\n\r\n");
            Assert.NotEqual("", during);
        }
        finally
        {
            foreach (var client in held)
            {
                client.Dispose();
            }
        }

        // Descriptors back: a new loopback client must be served (503 SlowDown for a moment at most).
        var deadline = Environment.TickCount64 + 30_000;
        string after;
        while (true)
        {
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, port);
            after = await RawExchangeAsync(client, "GET /object HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
            if (after.StartsWith("HTTP/1.1 200", StringComparison.Ordinal) || Environment.TickCount64 > deadline)
            {
                break;
            }

            await Task.Delay(200);
        }

        Assert.True(after.StartsWith("HTTP/1.1 200", StringComparison.Ordinal),
            "30 s after the shortage ended a loopback client still gets: " + after.Split("\r\n")[0]);
    }

    private static async Task<string> RawExchangeAsync(TcpClient client, string request)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var stream = client.GetStream();
        await stream.WriteAsync(Encoding.Latin1.GetBytes(request), timeout.Token);
        var buffer = new byte[4096];
        try
        {
            var read = await stream.ReadAsync(buffer, timeout.Token);
            return Encoding.Latin1.GetString(buffer, 0, read);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException)
        {
            return "";
        }
    }

    private static IPAddress? NonLoopbackAddress() =>
        NetworkInterface.GetAllNetworkInterfaces()
            .Where(nic => nic.OperationalStatus == OperationalStatus.Up && nic.NetworkInterfaceType != NetworkInterfaceType.Loopback)
            .SelectMany(nic => nic.GetIPProperties().UnicastAddresses)
            .Select(unicast => unicast.Address)
            .FirstOrDefault(address => address.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(address));
}
