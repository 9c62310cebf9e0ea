using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Cli;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;
using Sidekick.Topology;

namespace Sidekick.Tests.Hosting;

/// <summary>
/// --client-send-timeout: a client that stops taking its response is cut, and so is the backend exchange behind it;
/// a client that reads slowly is not. The clock is a <see cref="FakeTimeProvider"/> moved by hand, and each step
/// waits for the proxy to have reached the state it checks (a flush waiting for the client), so no sleep decides.
/// </summary>
public sealed class ClientSendTimeoutTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData("epoll")]
    [InlineData("dotnet")]
    public async Task A_client_that_stops_reading_is_cut_after_the_timeout_and_the_backend_connection_with_it(string engine)
    {
        await using var backend = new EndlessBackend();
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var sidekick = await StartAsync(backend, time, Timeout, engine);
        var watch = sidekick.Server.SendTimeout!;

        using var client = new TcpClient { ReceiveBufferSize = 64 * 1024 };
        await client.ConnectAsync(IPAddress.Loopback, sidekick.BaseAddress.Port);
        var stream = client.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes("GET /endless HTTP/1.1\r\nHost: h\r\n\r\n"));
        await ReadAsync(stream, 1024 * 1024);
        await sidekick.WaitUntilAsync(() => watch.Waiting == 1);

        // Not before the timeout: whichever flush waits now began at most this long ago.
        time.Advance(Timeout - TimeSpan.FromSeconds(1));
        Assert.Equal(0, watch.Closed);
        Assert.False(backend.Cut.Task.IsCompleted);

        await CutAsync(sidekick.WaitUntilAsync, time, watch);
        // The backend's endless body stops: sidekick closed its connection (its write fails) rather than keep it.
        await backend.Cut.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await EndOfStreamAsync(stream);

        // Others are served meanwhile, and the metric says what happened.
        Assert.Equal("ok", await sidekick.Client.GetStringAsync("/small"));
        Assert.Contains("sidekick_client_send_timeouts_total 1\n", await sidekick.Client.GetStringAsync("/.prometheus/metrics"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_client_that_reads_slowly_is_never_cut_however_long_its_response_takes()
    {
        await using var backend = new EndlessBackend();
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var sidekick = await StartAsync(backend, time, Timeout, "epoll");
        var watch = sidekick.Server.SendTimeout!;

        using var client = new TcpClient { ReceiveBufferSize = 64 * 1024 };
        await client.ConnectAsync(IPAddress.Loopback, sidekick.BaseAddress.Port);
        var stream = client.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes("GET /endless HTTP/1.1\r\nHost: h\r\n\r\n"));

        // Three quarters of the timeout pass between reads, four times: three timeouts in all, and each stall the
        // clock is moved through began after the client last took bytes.
        var buffer = new byte[64 * 1024];
        for (var step = 0; step < 4; step++)
        {
            var before = watch.Stalls;
            var reads = 0;
            do
            {
                Assert.True(await stream.ReadAsync(buffer) > 0, "the response ended");
                Assert.True(++reads < 16 * 1024, "1 GiB read and no flush waited for the client");
            }
            while (!(watch.Stalls > before && watch.Waiting == 1));

            time.Advance(Timeout * 3 / 4);
            Assert.Equal(0, watch.Closed);
        }

        Assert.False(backend.Cut.Task.IsCompleted);

        // The same client, once it stops reading, is cut: the watch was on all along.
        await CutAsync(sidekick.WaitUntilAsync, time, watch);
        await backend.Cut.Task.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Over_TLS_a_stalled_client_is_cut_as_over_plain_TCP()
    {
        await using var backend = new EndlessBackend();
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var options = SidekickHarness.FastOptions with
        {
            Address = "127.0.0.1:0",
            Sites = [backend.Url.ToString()],
            AutoTlsHost = "127.0.0.1",
            ClientSendTimeout = Timeout,
            Log = true,
        };
        var console = new StringWriter();
        var stdout = TextWriter.Synchronized(console);
        await using var instance = SidekickApp.Create(options, new SidekickSeams { Stdout = stdout, Stderr = TextWriter.Null, Time = time });
        await instance.Server.StartAsync();
        await Eventually.WaitUntilAsync(() => instance.Server.Topology.Current.ActiveSite is not null, timeoutMs: 45000);
        var watch = instance.Server.SendTimeout!;

        using var client = new TcpClient { ReceiveBufferSize = 64 * 1024 };
        await client.ConnectAsync(IPAddress.Loopback, instance.Server.BaseAddress.Port);
        await using var tls = new SslStream(client.GetStream(), leaveInnerStreamOpen: false);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "127.0.0.1",
            ApplicationProtocols = [SslApplicationProtocol.Http11],
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        });
        await tls.WriteAsync(Encoding.ASCII.GetBytes("GET /endless HTTP/1.1\r\nHost: h\r\n\r\n"));
        await ReadAsync(tls, 1024 * 1024);
        await Eventually.WaitUntilAsync(() => watch.Waiting == 1);

        time.Advance(Timeout - TimeSpan.FromSeconds(1));
        Assert.Equal(0, watch.Closed);
        await CutAsync((condition, timeoutMs, what) => Eventually.WaitUntilAsync(condition, timeoutMs, what), time, watch);
        await backend.Cut.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // --log names the client and the limit.
        var port = ((IPEndPoint)client.Client.LocalEndPoint!).Port;
        await Eventually.WaitUntilAsync(() => Logged(stdout, console).Contains($"client 127.0.0.1:{port} took no response bytes for 30s: its connection was closed (--client-send-timeout)", StringComparison.Ordinal));
    }

    /// <summary>What was written so far: the synchronized writer locks itself for each write.</summary>
    private static string Logged(TextWriter stdout, StringWriter console)
    {
        lock (stdout)
        {
            return console.ToString();
        }
    }

    [Fact]
    public async Task Zero_turns_the_timeout_off()
    {
        await using var backend = new EndlessBackend();
        await using var sidekick = await StartAsync(backend, TimeProvider.System, TimeSpan.Zero, "epoll");
        Assert.Null(sidekick.Server.SendTimeout);
        Assert.Contains("sidekick_client_send_timeouts_total 0\n", await sidekick.Client.GetStringAsync("/.prometheus/metrics"), StringComparison.Ordinal);
    }

    /// <summary>
    /// Moves the clock a second at a time while a flush waits, until the connection is cut. The sends go on for a
    /// moment after the client stops reading (until its buffers are full), so the flush waiting when the clock moves
    /// may still go through and another begin: the stall that finally lasts is cut once a timeout has passed on it.
    /// </summary>
    private static Task CutAsync(Func<Func<bool>, int, string?, Task> waitUntil, FakeTimeProvider time, ClientSendTimeout watch) =>
        waitUntil(() =>
        {
            if (watch.Waiting == 1)
            {
                time.Advance(TimeSpan.FromSeconds(1));
            }

            return watch.Closed == 1;
        }, 60000, "the stalled client cut");

    private static Task<SidekickHarness> StartAsync(EndlessBackend backend, TimeProvider time, TimeSpan timeout, string engine)
    {
        var options = SidekickHarness.FastOptions with { ClientSendTimeout = timeout };
        var url = backend.Url.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(backend.Url, url, new Uri(url + options.HealthPath))])];
        return SidekickHarness.StartAsync(options, sites, new SidekickSeams { Time = time, Environment = SidekickHarness.Variables(("SIDEKICK_IO", engine)) });
    }

    private static async Task ReadAsync(Stream stream, long count)
    {
        var buffer = new byte[64 * 1024];
        for (long got = 0; got < count;)
        {
            var read = await stream.ReadAsync(buffer);
            Assert.True(read > 0, "the response ended early");
            got += read;
        }
    }

    /// <summary>What the client still had buffered, then the end of the connection (a close or a reset).</summary>
    private static async Task EndOfStreamAsync(Stream stream)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            while (await stream.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(30)) > 0)
            {
            }
        }
        catch (IOException)
        {
        }
    }

    /// <summary>
    /// A backend whose /endless body never ends: it writes until its connection is closed, and says so. /small and
    /// the health probes get short answers.
    /// </summary>
    private sealed class EndlessBackend : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _accepting;

        public EndlessBackend()
        {
            _listener.Start();
            _accepting = AcceptAsync();
        }

        public Uri Url => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");

        /// <summary>Completed when a write of the endless body failed: the proxy closed the connection.</summary>
        public TaskCompletionSource Cut { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            await _accepting.ContinueWith(_ => { }, TaskScheduler.Default);
            _stop.Dispose();
        }

        private async Task AcceptAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                TcpClient connection;
                try
                {
                    connection = await _listener.AcceptTcpClientAsync(_stop.Token);
                }
                catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                    return;
                }

                _ = ServeAsync(connection);
            }
        }

        private async Task ServeAsync(TcpClient connection)
        {
            using var _ = connection;
            var stream = connection.GetStream();
            var head = new StringBuilder();
            var one = new byte[1];
            try
            {
                while (true)
                {
                    head.Clear();
                    while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
                    {
                        if (await stream.ReadAsync(one, _stop.Token) == 0)
                        {
                            return;
                        }

                        head.Append((char)one[0]);
                    }

                    if (!head.ToString().StartsWith("GET /endless ", StringComparison.Ordinal))
                    {
                        await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray(), _stop.Token);
                        continue;
                    }

                    await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\n\r\n"u8.ToArray(), _stop.Token);
                    var block = new byte[64 * 1024];
                    try
                    {
                        while (true)
                        {
                            await stream.WriteAsync(block, _stop.Token);
                        }
                    }
                    catch (IOException)
                    {
                        Cut.TrySetResult();
                        return;
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
            {
            }
        }
    }
}
