using System.Net;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Text;

namespace Sidekick.Tests.Integration;

public sealed class ForwardingTests
{
    [Fact]
    public async Task Backend_sees_client_host_raw_target_and_forwarding_headers()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);

        // A raw socket, so nothing on the client side re-encodes the target.
        const string target = "/bucket/a%2Fb%2Bc+d;v=1/%E2%82%AC?X-Amz-Signature=ab%2Bcd&list-type=2&prefix=a%20b;c";
        var response = await RawRequestAsync(sidekick.BaseAddress,
            $"GET {target} HTTP/1.1\r\nHost: s3.example:9000\r\nX-Forwarded-For: 9.9.9.9\r\nConnection: X-Drop\r\nX-Drop: 1\r\nProxy-Connection: x\r\nX-Want-Hop: 1\r\n\r\n");

        Assert.StartsWith("HTTP/1.1 200", response, StringComparison.Ordinal);
        var seen = a.Seen.Last(r => !r.RawTarget.StartsWith("/health", StringComparison.Ordinal));
        Assert.Equal(target, seen.RawTarget);
        Assert.Equal("s3.example:9000", seen.Headers["Host"]);
        Assert.Equal("s3.example:9000", seen.Headers["X-Forwarded-Host"]);
        var xff = seen.Headers["X-Forwarded-For"].Split(", ");
        Assert.Equal(2, xff.Length);
        Assert.Equal("9.9.9.9", xff[0]);
        Assert.Equal(seen.Headers["X-Real-IP"], xff[1]);
        Assert.False(seen.Headers.ContainsKey("X-Drop"), string.Join(" | ", seen.Headers.Select(h => h.Key + ": " + h.Value)));
        Assert.False(seen.Headers.ContainsKey("Proxy-Connection"));

        // Response: our markers, the backend's Server after ours, and the hop-by-hop header it named dropped.
        Assert.Contains("X-Proxy: true", response, StringComparison.Ordinal);
        Assert.Contains("Server: SideKick", response, StringComparison.Ordinal);
        Assert.Contains("TestBackend", response, StringComparison.Ordinal);
        Assert.True(seen.Headers.ContainsKey("X-Want-Hop"), "the backend was not asked to name a hop-by-hop header");
        Assert.DoesNotContain("X-Hop: secret", response, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(100L * 1024 * 1024)]
    [InlineData(1024L * 1024 * 1024)] // past every 32-bit length and offset
    public async Task Large_upload_and_download_are_byte_identical(long size)
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);

        using (var download = await sidekick.Client.GetAsync($"/download/{size}", HttpCompletionOption.ResponseHeadersRead))
        {
            download.EnsureSuccessStatusCode();
            await using var body = await download.Content.ReadAsStreamAsync();
            Assert.Equal(TestBackend.PatternSha256(size), Convert.ToHexString(await SHA256.HashDataAsync(body)));
        }

        var content = new StreamContent(new PatternStream(size));
        content.Headers.ContentLength = size;
        using var upload = await sidekick.Client.PostAsync("/upload", content);
        var uploaded = await upload.Content.ReadAsStringAsync();
        // A failed upload says why (sidekick's error body names the backend's failure).
        Assert.True(upload.IsSuccessStatusCode, $"upload answered {(int)upload.StatusCode}: {uploaded}");
        Assert.Equal($"{TestBackend.PatternSha256(size)} {size}", uploaded);

        // Unknown length: chunked both ways.
        using var chunked = new HttpRequestMessage(HttpMethod.Put, "/upload") { Content = new StreamContent(new PatternStream(3_000_000)) };
        chunked.Headers.TransferEncodingChunked = true;
        chunked.Headers.ExpectContinue = true;
        using var chunkedResponse = await sidekick.Client.SendAsync(chunked);
        Assert.Equal($"{TestBackend.PatternSha256(3_000_000)} 3000000", await chunkedResponse.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Backend_dying_mid_response_aborts_the_client_response()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        using var response = await sidekick.Client.GetAsync("/download/10000000?dieAt=1000000", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var body = await response.Content.ReadAsStreamAsync();
        await Assert.ThrowsAnyAsync<IOException>(() => body.CopyToAsync(Stream.Null));
    }

    [Fact]
    public async Task A_backend_dying_halfway_through_a_large_get_is_resumed_elsewhere()
    {
        const long size = 200L * 1024 * 1024;
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        a.DieAfterBytes = size / 2;
        await using var sidekick = await SidekickHarness.StartAsync([a], [b]);

        using var response = await sidekick.Client.GetAsync($"/download/{size}", HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        Assert.Equal(TestBackend.PatternSha256(size), Convert.ToHexString(await SHA256.HashDataAsync(body)));
        Assert.Contains(b.Seen, r => r.Headers.TryGetValue("Range", out var range) && range.StartsWith("bytes=", StringComparison.Ordinal));
        // The resumed bytes count as the exchange's (on the backend it started with), like the first half.
        await sidekick.WaitUntilAsync(() => sidekick.BackendOf(a).Stats.TxBytes >= size);
        // One body cut short counts towards a run of broken responses; it does not mark the node down alone.
        Assert.True(sidekick.BackendOf(a).IsUp);
    }

    [Fact]
    public async Task A_slow_client_asking_to_close_gets_the_whole_body_before_the_close()
    {
        // The response is written faster than the client reads, and the connection closes after it: what is
        // still queued for the socket when the server is done with the connection must go out first.
        const int size = 16 * 1024 * 1024;
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        using var tcp = new TcpClient { ReceiveBufferSize = 16 * 1024 };
        await tcp.ConnectAsync(IPAddress.Loopback, sidekick.BaseAddress.Port);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET /download/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));

        using var received = new MemoryStream();
        var buffer = new byte[16 * 1024];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        for (var reads = 0; ; reads++)
        {
            var read = await stream.ReadAsync(buffer, timeout.Token);
            if (read == 0)
            {
                break;
            }

            received.Write(buffer, 0, read);
            if (reads % 64 == 0)
            {
                await Task.Delay(10, timeout.Token); // slower than the server writes
            }
        }

        var bytes = received.ToArray();
        var headEnd = bytes.AsSpan().IndexOf("\r\n\r\n"u8) + 4;
        Assert.StartsWith("HTTP/1.1 200", Encoding.ASCII.GetString(bytes, 0, 12), StringComparison.Ordinal);
        Assert.Equal(size, bytes.Length - headEnd);
        Assert.Equal(TestBackend.PatternSha256(size), Convert.ToHexString(SHA256.HashData(bytes.AsSpan(headEnd))));
    }

    [Fact]
    public async Task A_client_leaving_mid_body_costs_the_backend_nothing()
    {
        await using var a = await TestBackend.StartAsync("a");
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);

        using (var response = await sidekick.Client.GetAsync("/download/104857600", HttpCompletionOption.ResponseHeadersRead))
        await using (var body = await response.Content.ReadAsStreamAsync())
        {
            var buffer = new byte[64 * 1024];
            for (var read = 0L; read < 1024 * 1024;)
            {
                read += await body.ReadAsync(buffer);
            }
        } // disposed with ~99 MiB unread: the client connection is dropped

        // Once the proxy has finished with the abandoned exchange, whatever it concluded has been applied.
        await sidekick.WaitUntilAsync(() => sidekick.BackendOf(a).InFlight == 0);
        Assert.True(sidekick.BackendOf(a).IsUp);
        // Whatever the backend still had in flight must not leak into the next responses.
        for (var i = 0; i < 3; i++)
        {
            var bytes = await sidekick.Client.GetByteArrayAsync("/download/100000");
            Assert.Equal(TestBackend.PatternSha256(100000), Convert.ToHexString(SHA256.HashData(bytes)));
        }
    }

    [Fact]
    public async Task A_changed_object_is_never_stitched_the_client_response_is_aborted()
    {
        const long size = 20L * 1024 * 1024;
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        a.DieAfterBytes = size / 2;
        b.Version = "v2";
        await using var sidekick = await SidekickHarness.StartAsync([a], [b]);

        using var response = await sidekick.Client.GetAsync($"/download/{size}", HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        await Assert.ThrowsAnyAsync<IOException>(() => body.CopyToAsync(Stream.Null));
    }

    [Fact]
    public async Task Event_stream_is_flushed_as_it_arrives()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        using var response = await sidekick.Client.GetAsync("/events", HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[64];
        // The backend waits 2 s after the first event; it must arrive well before the stream ends.
        using var first = new CancellationTokenSource(TimeSpan.FromMilliseconds(1500));
        var read = await body.ReadAsync(buffer, first.Token);
        Assert.StartsWith("data: 0", Encoding.ASCII.GetString(buffer, 0, read), StringComparison.Ordinal);
    }

    [Fact]
    public async Task WebSocket_echo_works_through_the_proxy()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await SidekickHarness.StartAsync([a]);
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{sidekick.BaseAddress.Port}/ws"), CancellationToken.None);
        await socket.SendAsync("hello"u8.ToArray(), WebSocketMessageType.Text, true, CancellationToken.None);
        var buffer = new byte[64];
        var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
        Assert.Equal("hello", Encoding.UTF8.GetString(buffer, 0, result.Count));
        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, CancellationToken.None);
        Assert.True(sidekick.BackendOf(a).IsUp);
    }

    [Fact]
    public async Task Stop_lets_in_flight_requests_finish()
    {
        await using var a = await TestBackend.StartAsync("a");
        var sidekick = await SidekickHarness.StartAsync([a]);
        var slow = sidekick.Client.GetStringAsync("/slow?ms=1500");
        await sidekick.WaitUntilAsync(() => sidekick.BackendOf(a).InFlight == 1);
        var stopping = sidekick.Server.StopAsync();
        Assert.Equal("a", await slow);
        await stopping;
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => sidekick.Client.GetStringAsync("/x"));
        await sidekick.Server.DisposeAsync();
        sidekick.Client.Dispose();
    }

    /// <summary>Sends one request on a raw socket (nothing re-encodes it) and reads one response with a body.</summary>
    private static async Task<string> RawRequestAsync(Uri baseAddress, string request)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, baseAddress.Port);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        var received = new StringBuilder();
        var buffer = new byte[8192];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (true)
        {
            var text = received.ToString();
            var end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (end >= 0 && text.EndsWith("\r\n0\r\n\r\n", StringComparison.Ordinal))
            {
                return text; // end of a chunked body
            }

            if (end >= 0)
            {
                var lengthLine = text[..end].Split("\r\n").FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
                if (lengthLine is not null && text.Length - end - 4 >= int.Parse(lengthLine["Content-Length:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture))
                {
                    return text;
                }
            }

            var read = await stream.ReadAsync(buffer, timeout.Token);
            if (read == 0)
            {
                return received.ToString();
            }

            received.Append(Encoding.ASCII.GetString(buffer, 0, read));
        }
    }

    /// <summary>A read-only stream producing the test pattern without holding it in memory.</summary>
    private sealed class PatternStream(long length) : Stream
    {
        private long _position;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = (int)Math.Min(count, length - _position);
            for (var i = 0; i < n; i++)
            {
                buffer[offset + i] = TestBackend.Pattern(_position + i);
            }

            _position += n;
            return n;
        }

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
