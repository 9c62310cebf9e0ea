using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Xunit.Abstractions;

namespace Sidekick.Tests.Hosting;

/// <summary>
/// Bounds on silence and slowness, on the built program: a backend that never answers, a backend that never
/// says 100 Continue, a request body that trickles, a connection that never speaks, a stop that cuts requests.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class BoundsProcessTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_silent_backend_is_cut_at_the_backend_timeout()
    {
        await using var silent = new SilentBackend();
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "",
            "--backend-timeout", "1s", silent.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        var watch = Stopwatch.StartNew();
        using var response = await client.GetAsync($"http://127.0.0.1:{port}/never");
        output.WriteLine($"answered {(int)response.StatusCode} after {watch.ElapsedMilliseconds} ms");
        Assert.True((int)response.StatusCode == 504, $"status {(int)response.StatusCode}");
        Assert.InRange(watch.ElapsedMilliseconds, 900, 30_000);
    }

    [Fact]
    public async Task Expect_100_continue_follows_the_backend_not_a_fixed_15_seconds()
    {
        // This backend never sends 100 Continue: it reads the body once it comes, then answers.
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient(new SocketsHttpHandler { Expect100ContinueTimeout = TimeSpan.FromSeconds(60) });
        using var request = new HttpRequestMessage(HttpMethod.Put, $"http://127.0.0.1:{port}/object")
        {
            Content = new ByteArrayContent(new byte[100_000]),
        };
        request.Headers.ExpectContinue = true;
        var watch = Stopwatch.StartNew();
        using var response = await client.SendAsync(request);
        output.WriteLine($"answered {(int)response.StatusCode} after {watch.ElapsedMilliseconds} ms");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(watch.ElapsedMilliseconds < 10_000, $"took {watch.ElapsedMilliseconds} ms");
        Assert.Equal(100_000, Assert.Single(backend.Requests).Body.Length);
    }

    [Fact]
    public async Task A_request_body_trickling_below_the_minimum_rate_is_cut()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes("PUT /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"));
        var watch = Stopwatch.StartNew();
        var sent = 0;
        var closed = false;
        // One byte a second, far below the default 240 B/s; Kestrel judges the rate after a 5 s grace.
        while (watch.Elapsed < TimeSpan.FromSeconds(40) && !closed)
        {
            try
            {
                await stream.WriteAsync("x"u8.ToArray());
                sent++;
                closed = await ClosedWithinAsync(stream, TimeSpan.FromSeconds(1));
            }
            catch (IOException)
            {
                closed = true;
            }
        }

        output.WriteLine($"cut after {sent} bytes, {watch.ElapsedMilliseconds} ms");
        Assert.True(closed, $"still open after {sent} bytes at 1 B/s");
    }

    [Fact]
    public async Task A_connection_that_never_speaks_is_closed_at_the_header_timeout()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "",
            "--client-header-timeout", "1s", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        var watch = Stopwatch.StartNew();
        Assert.True(await ClosedWithinAsync(tcp.GetStream(), TimeSpan.FromSeconds(30)), "the silent connection stayed open for 30 s");
        output.WriteLine($"closed after {watch.ElapsedMilliseconds} ms");
        Assert.True(watch.ElapsedMilliseconds >= 900, $"closed after only {watch.ElapsedMilliseconds} ms");
    }

    [Fact]
    public async Task A_stop_that_cuts_requests_exits_non_zero_and_says_so()
    {
        await using var silent = new SilentBackend();
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "",
            "--shutdown-timeout", "1s", silent.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient();
        var held = client.GetAsync($"http://127.0.0.1:{port}/never");
        await Eventually.WaitUntilAsync(() => silent.Held > 0);
        sidekick.Signal("TERM");
        using (var exit = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            await sidekick.Process.WaitForExitAsync(exit.Token);
        }

        sidekick.Process.WaitForExit();
        await Assert.ThrowsAnyAsync<Exception>(() => held);
        Assert.Equal(3, sidekick.Process.ExitCode);
        Assert.Contains("1 request(s) still running; they were cut", sidekick.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_second_stop_signal_ends_the_drain_at_once()
    {
        await using var silent = new SilentBackend();
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "",
            "--shutdown-timeout", "1h", silent.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient();
        var held = client.GetAsync($"http://127.0.0.1:{port}/never");
        await Eventually.WaitUntilAsync(() => silent.Held > 0);
        sidekick.Signal("TERM");
        await Eventually.WaitUntilAsync(() => sidekick.Stdout.Contains("caught signal 'terminated': stopping", StringComparison.Ordinal));
        Assert.False(sidekick.Process.HasExited, "the first signal ended the process although a request was in flight");

        sidekick.Signal("INT");
        using (var exit = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            // Without the second signal's exit this waits for the hour's drain: the token ends the wait, and the test fails.
            await sidekick.Process.WaitForExitAsync(exit.Token);
        }

        sidekick.Process.WaitForExit();
        await Assert.ThrowsAnyAsync<Exception>(() => held);
        Assert.Equal(3, sidekick.Process.ExitCode);
        Assert.Contains("caught signal 'interrupt' again: exiting now, without waiting for 1 request in flight", sidekick.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_stop_that_cuts_nothing_exits_zero()
    {
        await using var silent = new SilentBackend();
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "",
            "--shutdown-timeout", "1s", silent.Url.ToString());
        await sidekick.WaitForHealthAsync(port);
        sidekick.Signal("TERM");
        using (var exit = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            await sidekick.Process.WaitForExitAsync(exit.Token);
        }

        Assert.Equal(0, sidekick.Process.ExitCode);
    }

    /// <summary>True when the peer closed (or reset) the connection within the time.</summary>
    private static async Task<bool> ClosedWithinAsync(NetworkStream stream, TimeSpan within)
    {
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(within);
        try
        {
            while (true)
            {
                if (await stream.ReadAsync(buffer, timeout.Token) == 0)
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (IOException)
        {
            return true;
        }
    }

    /// <summary>Answers health probes; holds every other request without a byte of answer.</summary>
    private sealed class SilentBackend : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _accepting;
        private int _held;

        public SilentBackend()
        {
            _listener.Start();
            _accepting = AcceptAsync();
        }

        public Uri Url => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");

        public int Held => Volatile.Read(ref _held);

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            try
            {
                await _accepting;
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
        }

        private async Task AcceptAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                var socket = await _listener.AcceptSocketAsync(_stop.Token);
                _ = ServeAsync(socket);
            }
        }

        private async Task ServeAsync(Socket socket)
        {
            using var _ = socket;
            var buffer = new byte[64 * 1024];
            var filled = 0;
            try
            {
                while (true)
                {
                    var read = await socket.ReceiveAsync(buffer.AsMemory(filled), _stop.Token);
                    if (read == 0)
                    {
                        return;
                    }

                    filled += read;
                    var text = Encoding.Latin1.GetString(buffer, 0, filled);
                    if (!text.Contains("\r\n\r\n", StringComparison.Ordinal))
                    {
                        continue;
                    }

                    filled = 0;
                    if (text.StartsWith("GET /health", StringComparison.Ordinal))
                    {
                        await socket.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"u8.ToArray(), SocketFlags.None, _stop.Token);
                        continue;
                    }

                    Interlocked.Increment(ref _held);
                    await Task.Delay(Timeout.Infinite, _stop.Token);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
        }
    }
}
