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
    [Fact]
    public async Task A_hung_http2_client_that_reads_nothing_is_cut_after_the_client_send_timeout()
    {
        // docs/configuration.md: "A client that stops reading its response (a hung or suspended process ...) is cut
        // after --client-send-timeout ... It applies to plain and TLS connections, HTTP/1.1 and HTTP/2 alike".
        var body = new byte[8 * 1024 * 1024];
        await using var backend = new RawBackend(_ => new RawResponse(
            [.. Encoding.Latin1.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {body.Length}\r\n\r\n"), .. body]));
        var port = SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with
        {
            Address = $"127.0.0.1:{port}",
            Sites = [backend.Url.ToString()],
            AutoTlsHost = "127.0.0.1",
            ClientSendTimeout = TimeSpan.FromSeconds(2),
        };
        await using var sidekick = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null });
        await sidekick.Server.StartAsync();
        await Eventually.WaitUntilAsync(() => sidekick.Server.Topology.Current.ActiveSite is not null, timeoutMs: 45000);

        // A client with HTTP/2's default windows (65,535 bytes, as nghttp2 and python-h2 advertise) that sends its
        // request and then hangs: it never reads and never sends WINDOW_UPDATE.
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        await using var tls = new SslStream(tcp.GetStream());
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "127.0.0.1",
            ApplicationProtocols = [SslApplicationProtocol.Http2],
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        });
        var output = new MemoryStream();
        output.Write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
        output.Write([0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, none changed
        var block = new MemoryStream();
        foreach (var (name, value) in new[] { (":method", "GET"), (":scheme", "https"), (":path", "/big"), (":authority", "127.0.0.1") })
        {
            block.WriteByte(0);
            block.WriteByte((byte)name.Length);
            block.Write(Encoding.Latin1.GetBytes(name));
            block.WriteByte((byte)value.Length);
            block.Write(Encoding.Latin1.GetBytes(value));
        }

        output.Write([0, 0, (byte)block.Length, 0x1, 0x5, 0, 0, 0, 1]);
        output.Write(block.ToArray());
        await tls.WriteAsync(output.ToArray());
        await tls.FlushAsync();

        // Cut once its stream waited the timeout (the sweep runs every half second here); fails at 30 s without the watch.
        await Eventually.WaitUntilAsync(() => sidekick.Server.SendTimeout!.Closed >= 1, timeoutMs: 30_000,
            what: "the hung HTTP/2 client's stream to be cut after --client-send-timeout 2s");
        // On the HTTP/1.1 path its backend exchange is let go with it. On YARP's path (SIDEKICK_FORWARDER=yarp: TLS
        // backends, large uploads) the stream is reset but YARP's exchange ends only when the client's connection does:
        // a known gap, in docs/configuration.md.
        if (Environment.GetEnvironmentVariable("SIDEKICK_FORWARDER") != "yarp")
        {
            await Eventually.WaitUntilAsync(() => sidekick.Server.Topology.Current.AllBackends.All(b => b.InFlight == 0), what: "the backend exchange to end");
        }
    }
}
