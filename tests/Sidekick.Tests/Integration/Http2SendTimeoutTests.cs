using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Integration;

/// <summary>--client-send-timeout over HTTP/2, where a hung client's stream waits on its flow-control window, not the socket.</summary>
public sealed class Http2SendTimeoutTests
{
    private const byte Headers = 0x1, RstStream = 0x3, Settings = 0x4, GoAway = 0x7;
    private const byte EndStream = 0x1, Ack = 0x1, EndHeaders = 0x4;

    [Fact]
    public async Task A_hung_http2_client_that_reads_nothing_is_cut_after_the_client_send_timeout()
    {
        // docs/configuration.md: "A client that stops reading its response (a hung or suspended process ...) is cut
        // after --client-send-timeout ... It applies to plain and TLS connections, HTTP/1.1 and HTTP/2 alike".
        var body = new byte[8 * 1024 * 1024];
        await using var backend = new RawBackend(_ => new RawResponse(
            [.. Encoding.Latin1.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {body.Length}\r\n\r\n"), .. body]));
        await using var sidekick = await StartAsync(backend);

        // A client with HTTP/2's default windows (65,535 bytes, as nghttp2 and python-h2 advertise) that sends its
        // request and then hangs: it never reads and never sends WINDOW_UPDATE.
        await using var tls = await ConnectAsync(sidekick.Port);
        var output = new MemoryStream();
        output.Write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
        Frame(output, Settings, 0, 0, []); // none changed
        Frame(output, Headers, EndHeaders | EndStream, 1, Get("/big"));
        await tls.WriteAsync(output.ToArray());
        await tls.FlushAsync();

        // Cut once its stream waited the timeout (the sweep runs every half second here); fails at 30 s without the watch.
        await Eventually.WaitUntilAsync(() => sidekick.App.Server.SendTimeout!.Closed >= 1, timeoutMs: 30_000,
            what: "the hung HTTP/2 client's stream to be cut after --client-send-timeout 2s");
        // Its backend exchange is let go with it, on either forwarder (on YARP's path it was held until the client's
        // connection ended: the cut went to the download resume watch, which only noted it).
        await Eventually.WaitUntilAsync(() => sidekick.App.Server.Topology.Current.AllBackends.All(b => b.InFlight == 0), what: "the backend exchange to end");
    }

    [Fact]
    public async Task A_hung_http2_stream_is_reset_alone_and_lets_go_of_its_backend_exchange_while_its_connection_serves_on()
    {
        // docs/configuration.md: "a stream whose response waits the timeout for the client's flow-control window ...
        // is reset alone, and its backend exchange let go; the connection's other streams go on." A plain GET of a
        // known length, which on YARP's path (SIDEKICK_FORWARDER=yarp, TLS backends) is watched for a download resume.
        var body = new byte[8 * 1024 * 1024];
        await using var backend = new RawBackend(_ => new RawResponse(
            [.. Encoding.Latin1.GetBytes($"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: {body.Length}\r\n\r\n"), .. body]));
        await using var sidekick = await StartAsync(backend);

        // This client reads every frame but never opens a window: its socket never makes a send wait, so only the
        // stream's watch can see it stalled.
        await using var tls = await ConnectAsync(sidekick.Port);
        var output = new MemoryStream();
        output.Write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
        Frame(output, Settings, 0, 0, []);
        Frame(output, Headers, EndHeaders | EndStream, 1, Get("/big"));
        await tls.WriteAsync(output.ToArray());
        await tls.FlushAsync();

        // Without the reset nothing comes after the first 64 KiB: the read gives up at its deadline.
        var reset = await ReadUntilAsync(tls, f => f.Type == RstStream && f.Stream == 1, "RST_STREAM on the stalled stream 1");
        Assert.Equal(4, reset.Payload.Length);
        // The cut is counted just after the reset goes out (CutOff): the RST_STREAM can reach us first.
        await Eventually.WaitUntilAsync(() => sidekick.App.Server.SendTimeout!.Closed >= 1, what: "the cut to be counted");
        Assert.Equal(1, sidekick.App.Server.SendTimeout!.Closed);
        await Eventually.WaitUntilAsync(() => sidekick.App.Server.Topology.Current.AllBackends.All(b => b.InFlight == 0), what: "the backend exchange to end");

        // The connection itself was not cut: a second stream on it is answered (its HEADERS need no window).
        output.SetLength(0);
        Frame(output, Headers, EndHeaders | EndStream, 3, Get("/next"));
        await tls.WriteAsync(output.ToArray());
        await tls.FlushAsync();
        var answer = await ReadUntilAsync(tls, f => f.Type == Headers && f.Stream == 3, "HEADERS on stream 3 of the same connection");
        Assert.Equal(0x88, answer.Payload[0]); // :status 200, indexed (RFC 7541 Appendix A, index 8)
    }

    private sealed class RunningSidekick(SidekickInstance app, int port) : IAsyncDisposable
    {
        public SidekickInstance App => app;

        public int Port => port;

        public ValueTask DisposeAsync() => app.DisposeAsync();
    }

    private static async Task<RunningSidekick> StartAsync(RawBackend backend)
    {
        var port = SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with
        {
            Address = $"127.0.0.1:{port}",
            Sites = [backend.Url.ToString()],
            AutoTlsHost = "127.0.0.1",
            ClientSendTimeout = TimeSpan.FromSeconds(2),
        };
        var sidekick = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null });
        await sidekick.Server.StartAsync();
        await Eventually.WaitUntilAsync(() => sidekick.Server.Topology.Current.ActiveSite is not null, timeoutMs: 45000);
        return new RunningSidekick(sidekick, port);
    }

    private static async Task<SslStream> ConnectAsync(int port)
    {
        var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        var tls = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "127.0.0.1",
            ApplicationProtocols = [SslApplicationProtocol.Http2],
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        });
        return tls;
    }

    /// <summary>A GET's header block: literals without indexing, new names, no Huffman coding (RFC 7541 §6.2.2).</summary>
    private static byte[] Get(string path)
    {
        var block = new MemoryStream();
        foreach (var (name, value) in new[] { (":method", "GET"), (":scheme", "https"), (":path", path), (":authority", "127.0.0.1") })
        {
            block.WriteByte(0);
            block.WriteByte((byte)name.Length);
            block.Write(Encoding.Latin1.GetBytes(name));
            block.WriteByte((byte)value.Length);
            block.Write(Encoding.Latin1.GetBytes(value));
        }

        return block.ToArray();
    }

    private static void Frame(MemoryStream output, byte type, byte flags, int stream, byte[] payload)
    {
        output.Write([(byte)(payload.Length >> 16), (byte)(payload.Length >> 8), (byte)payload.Length, type, flags]);
        Span<byte> id = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(id, stream);
        output.Write(id);
        output.Write(payload);
    }

    private readonly record struct Received(byte Type, byte Flags, int Stream, byte[] Payload);

    /// <summary>
    /// Reads frames (acknowledging the server's SETTINGS, never opening a window) until one matches; fails naming
    /// <paramref name="what"/> when the connection ends or 30 s pass first.
    /// </summary>
    private static async Task<Received> ReadUntilAsync(SslStream tls, Func<Received, bool> match, string what)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var header = new byte[9];
        try
        {
            while (true)
            {
                await tls.ReadExactlyAsync(header, deadline.Token);
                var frame = new Received(header[3], header[4], BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(5)) & int.MaxValue,
                    new byte[(header[0] << 16) | (header[1] << 8) | header[2]]);
                await tls.ReadExactlyAsync(frame.Payload, deadline.Token);
                if (match(frame))
                {
                    return frame;
                }

                Assert.False(frame.Type == GoAway, $"the connection went away (GOAWAY) before {what}");
                if (frame.Type == Settings && (frame.Flags & Ack) == 0)
                {
                    var ack = new MemoryStream();
                    Frame(ack, Settings, Ack, 0, []);
                    await tls.WriteAsync(ack.ToArray(), deadline.Token);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or EndOfStreamException or IOException)
        {
            throw new TimeoutException($"no {what}: {(deadline.IsCancellationRequested ? "nothing for 30 s" : "the connection ended")}", ex);
        }
    }
}
