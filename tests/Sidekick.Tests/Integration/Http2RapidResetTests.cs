using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Sidekick.Hosting;
using Sidekick.Security;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Sidekick.Tests.Security;

namespace Sidekick.Tests.Integration;

/// <summary>HTTP/2 rapid reset (CVE-2023-44487's pattern) over TLS: what a reset stream costs the backend side.</summary>
public sealed class Http2RapidResetTests : IAsyncLifetime
{
    private RawBackend _backend = null!;
    private SidekickInstance _sidekick = null!;
    private int _port;

    public async Task InitializeAsync()
    {
        _backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        _port = SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with
        {
            Address = $"127.0.0.1:{_port}",
            Sites = [_backend.Url.ToString()],
            AutoTlsHost = "127.0.0.1",
            HealthDuration = TimeSpan.FromSeconds(5),
        };
        _sidekick = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null });
        await _sidekick.Server.StartAsync();
        await Eventually.WaitUntilAsync(() => _sidekick.Server.Topology.Current.ActiveSite is not null, timeoutMs: 45000);
    }

    public async Task DisposeAsync()
    {
        await _sidekick.DisposeAsync();
        await _backend.DisposeAsync();
    }

    private int ConnectionsWithoutAByte() => _backend.Received.Values.Count(log => { lock (log) { return log.Length == 0; } });

    [Fact]
    public async Task Streams_reset_right_after_their_headers_do_not_each_open_a_backend_connection()
    {
        // CVE-2023-44487's pattern: HEADERS then RST_STREAM(CANCEL), over and over, on one TLS connection.
        var openedBefore = _backend.Connections;
        var emptyBefore = ConnectionsWithoutAByte();
        var sent = await RapidResetAsync(_port, streams: 1000);
        await Task.Delay(3000);

        var opened = _backend.Connections - openedBefore;
        var empty = ConnectionsWithoutAByte() - emptyBefore;
        // An HTTP/1.1 client needs one TCP (and TLS) connection per backend connection it makes sidekick open; a
        // handful is the most a single client connection should cost. A connection opened for a request whose client
        // left before it was sent carries no request: it can go back to the pool instead of being closed unused.
        Assert.True(opened <= 10 && empty <= 5,
            $"one client connection resetting {sent} streams made sidekick open {opened} backend connections, {empty} of them closed without a byte sent");
    }

    private static async Task<int> RapidResetAsync(int port, int streams)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        await using var tls = new SslStream(tcp.GetStream());
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "127.0.0.1",
            ApplicationProtocols = [SslApplicationProtocol.Http2],
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        });
        // Drain what the server sends so that its writes never block.
        var reading = Task.Run(async () =>
        {
            var sink = new byte[65536];
            try
            {
                while (await tls.ReadAsync(sink) > 0)
                {
                }
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException)
            {
            }
        });
        var sent = 0;
        try
        {
            var preface = new MemoryStream();
            preface.Write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
            Frame(preface, 0x4, 0, 0, []);
            await tls.WriteAsync(preface.ToArray());
            var id = 1;
            while (sent < streams)
            {
                var batch = new MemoryStream();
                for (var i = 0; i < 50; i++, id += 2, sent++)
                {
                    var block = new MemoryStream();
                    Literal(block, ":method", "GET");
                    Literal(block, ":scheme", "https");
                    Literal(block, ":path", $"/bucket/key{id}");
                    Literal(block, ":authority", "127.0.0.1");
                    Frame(batch, 0x1, 0x5, id, block.ToArray()); // HEADERS, END_STREAM | END_HEADERS
                    var cancel = new byte[4];
                    BinaryPrimitives.WriteInt32BigEndian(cancel, 8);
                    Frame(batch, 0x3, 0, id, cancel); // RST_STREAM CANCEL
                }

                await tls.WriteAsync(batch.ToArray());
                await tls.FlushAsync();
            }
        }
        catch (IOException)
        {
            // The server may end the connection (GOAWAY ENHANCE_YOUR_CALM): what was sent counts.
        }

        tcp.Client.Shutdown(SocketShutdown.Send);
        await Task.WhenAny(reading, Task.Delay(2000));
        return sent;
    }

    private static void Frame(Stream output, byte type, byte flags, int stream, byte[] payload)
    {
        output.Write([(byte)(payload.Length >> 16), (byte)(payload.Length >> 8), (byte)payload.Length, type, flags]);
        var id = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(id, stream);
        output.Write(id);
        output.Write(payload);
    }

    private static void Literal(Stream block, string name, string value)
    {
        block.WriteByte(0x00);
        var n = Encoding.Latin1.GetBytes(name);
        var v = Encoding.Latin1.GetBytes(value);
        block.WriteByte((byte)n.Length);
        block.Write(n);
        block.WriteByte((byte)v.Length);
        block.Write(v);
    }
}
