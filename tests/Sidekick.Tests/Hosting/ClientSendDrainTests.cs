using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Hosting;

namespace Sidekick.Tests.Hosting;

/// <summary>
/// --client-send-timeout on a connection's last bytes. When the server is done with a connection (a response with
/// Connection: close, a keep-alive connection closed when idle) the transport still sends what it holds before it closes
/// the socket; no flush waits for that, so a client that stopped reading held its connection for ever (3 of 30 such
/// clients, with both socket engines). The connection here is a real loopback TCP connection whose client reads only
/// when the test says so; its server side is handed to the watch as a transport that is done with it.
/// </summary>
public sealed class ClientSendDrainTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_client_that_takes_none_of_a_finished_connections_last_bytes_is_cut_after_the_timeout()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var watch = new ClientSendTimeout(Timeout, time);
        using var pair = await StalledPair.OpenAsync();
        var connection = new FinishedConnection(pair.Server);
        await watch.Install(_ => Task.CompletedTask)(connection);

        time.Advance(Timeout - TimeSpan.FromSeconds(1));
        Assert.False(connection.Aborted);
        for (var second = 0; second < 3 && !connection.Aborted; second++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.True(connection.Aborted, "the stalled client's connection was never cut");
        Assert.Equal(1, watch.Closed);
    }

    [Fact]
    public async Task A_client_that_keeps_taking_the_last_bytes_slowly_is_not_cut()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var watch = new ClientSendTimeout(Timeout, time);
        using var pair = await StalledPair.OpenAsync();
        var connection = new FinishedConnection(pair.Server);
        await watch.Install(_ => Task.CompletedTask)(connection);

        // Twice the timeout, a few KiB taken every ten seconds: the kernel's send queue moves between sweeps.
        var buffer = new byte[4096];
        for (var step = 0; step < 6; step++)
        {
            var queued = pair.ServerQueued();
            Assert.True(await pair.Client.ReceiveAsync(buffer) > 0);
            await Eventually.WaitUntilAsync(() => pair.ServerQueued() != queued, what: "the server's send queue to move");
            for (var second = 0; second < 10; second++)
            {
                time.Advance(TimeSpan.FromSeconds(1));
            }
        }

        Assert.False(connection.Aborted);
        Assert.Equal(0, watch.Closed);
    }

    [Fact]
    public async Task A_connection_that_closes_is_no_longer_watched()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var watch = new ClientSendTimeout(Timeout, time);
        using var pair = await StalledPair.OpenAsync();
        var connection = new FinishedConnection(pair.Server);
        await watch.Install(_ => Task.CompletedTask)(connection);
        Assert.Equal(1, watch.Draining);

        connection.CloseByTransport();
        time.Advance(TimeSpan.FromSeconds(1)); // the next sweep sees the socket closed
        Assert.Equal(0, watch.Draining);
        time.Advance(Timeout * 2);
        Assert.False(connection.Aborted);
        Assert.Equal(0, watch.Closed);
    }

    [Fact]
    public async Task A_client_that_ends_its_side_and_then_reads_nothing_is_still_cut()
    {
        // Both transports fire ConnectionClosed when the client's FIN arrives, with the socket still open and the send
        // loop blocked on the client: taken as the close, it ended the watch and the connection was held for ever.
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var watch = new ClientSendTimeout(Timeout, time);
        using var pair = await StalledPair.OpenAsync();
        var connection = new FinishedConnection(pair.Server);
        await watch.Install(_ => Task.CompletedTask)(connection);

        pair.Client.Shutdown(SocketShutdown.Send);
        connection.ReceiveSideEnded();
        for (var second = 0; second < 40 && !connection.Aborted; second++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.True(connection.Aborted, "the connection whose client sent a FIN and read nothing was never cut");
        Assert.Equal(1, watch.Closed);
    }

    [Fact]
    public async Task A_connection_whose_client_ended_its_side_before_the_server_was_done_is_watched_too()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var watch = new ClientSendTimeout(Timeout, time);
        using var pair = await StalledPair.OpenAsync();
        var connection = new FinishedConnection(pair.Server);
        pair.Client.Shutdown(SocketShutdown.Send);
        connection.ReceiveSideEnded();

        await watch.Install(_ => Task.CompletedTask)(connection);
        Assert.Equal(1, watch.Draining);
        for (var second = 0; second < 40 && !connection.Aborted; second++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.True(connection.Aborted);
    }

    [Fact]
    public async Task A_connection_whose_socket_closed_without_its_closed_token_is_no_longer_watched_and_not_cut()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var watch = new ClientSendTimeout(Timeout, time);
        using var pair = await StalledPair.OpenAsync();
        var connection = new FinishedConnection(pair.Server);
        await watch.Install(_ => Task.CompletedTask)(connection);

        pair.Server.Dispose(); // a transport that closed the socket and disposed its token without firing it
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(0, watch.Draining);
        time.Advance(Timeout * 2);
        Assert.False(connection.Aborted);
        Assert.Equal(0, watch.Closed);
    }

    /// <summary>A loopback TCP connection whose client does not read, with the server's send queue filled.</summary>
    private sealed class StalledPair : IDisposable
    {
        private StalledPair(Socket client, Socket server)
        {
            Client = client;
            Server = server;
        }

        public Socket Client { get; }

        public Socket Server { get; }

        public static async Task<StalledPair> OpenAsync()
        {
            using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen();
            var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
            await client.ConnectAsync(listener.LocalEndPoint!);
            var server = await listener.AcceptAsync();
            server.Blocking = false;
            var chunk = new byte[64 * 1024];
            while (server.Send(chunk, SocketFlags.None, out var error) > 0 || error != SocketError.WouldBlock)
            {
                // until the client's receive buffer and the server's send queue are full
            }

            return new StalledPair(client, server);
        }

        public int ServerQueued() => Sidekick.Platform.Libc.SendQueued(Server.SafeHandle);

        public void Dispose()
        {
            Client.Dispose();
            Server.Dispose();
        }
    }

    /// <summary>A connection the server has finished with, as a transport hands it over: its socket, and a closed token the transport fires.</summary>
    private sealed class FinishedConnection : ConnectionContext, IConnectionSocketFeature
    {
        private readonly CancellationTokenSource _closed = new();

        public FinishedConnection(Socket socket)
        {
            Socket = socket;
            Features.Set<IConnectionSocketFeature>(this);
            var pipe = new Pipe();
            Transport = new Duplex(new Pipe().Reader, pipe.Writer);
        }

        public Socket Socket { get; }

        public bool Aborted { get; private set; }

        public override string ConnectionId { get; set; } = "test";

        public override IFeatureCollection Features { get; } = new FeatureCollection();

        public override IDictionary<object, object?> Items { get; set; } = new Dictionary<object, object?>();

        public override IDuplexPipe Transport { get; set; }

        public override CancellationToken ConnectionClosed
        {
            get => _closed.Token;
            set => throw new NotSupportedException();
        }

        public override void Abort(ConnectionAbortedException abortReason)
        {
            Aborted = true;
            Socket.Shutdown(SocketShutdown.Both);
            _closed.Cancel();
        }

        /// <summary>As a transport closes a connection: its socket, then the closed token.</summary>
        public void CloseByTransport()
        {
            Socket.Dispose();
            _closed.Cancel();
        }

        /// <summary>As both transports do when the client's FIN arrives: the token fires, the socket stays open.</summary>
        public void ReceiveSideEnded() => _closed.Cancel();

        private sealed record Duplex(PipeReader Input, PipeWriter Output) : IDuplexPipe;
    }
}
