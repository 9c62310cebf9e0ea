using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Hosting;

/// <summary>
/// HTTP/2 from the client over TLS, many streams on one connection at once: every response's bytes arrive whole
/// and in order, whatever its size, with the connection's sends gathered off the loop thread.
/// </summary>
public sealed class Http2ClientTests
{
    [Fact]
    public async Task Hundreds_of_concurrent_streams_on_one_connection_each_get_their_own_body_byte_for_byte()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with
        {
            Address = $"127.0.0.1:{port}",
            Sites = [backend.Url.ToString()],
            AutoTlsHost = "127.0.0.1",
        };
        await using var instance = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null });
        await instance.Server.StartAsync();
        // Generous, as ServerTlsTests: a first probe on two busy cores has taken past 15 s.
        await Eventually.WaitUntilAsync(() => instance.Server.Topology.Current.ActiveSite is not null, timeoutMs: 45000);

        using var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
            EnableMultipleHttp2Connections = false,
        };
        using var client = new HttpClient(handler) { Timeout = TimeSpan.FromMinutes(2) };
        // Sizes from one frame to many, and lengths that end inside a frame and inside a TLS record.
        long[] lengths = [1, 1024, 16_385, 300_000, 1_048_579];
        var expected = lengths.ToDictionary(l => l, TestBackend.PatternSha256);

        for (var wave = 0; wave < 2; wave++)
        {
            var answers = await Task.WhenAll(Enumerable.Range(0, 160).Select(async i =>
            {
                var length = lengths[i % lengths.Length];
                using var request = new HttpRequestMessage(HttpMethod.Get, $"https://127.0.0.1:{port}/download/{length}?stream={i}")
                {
                    Version = HttpVersion.Version20,
                    VersionPolicy = HttpVersionPolicy.RequestVersionExact,
                };
                using var response = await client.SendAsync(request);
                var body = await response.Content.ReadAsByteArrayAsync();
                return (i, length, response.StatusCode, response.Version, Sha: Convert.ToHexString(SHA256.HashData(body)));
            }));

            foreach (var answer in answers)
            {
                Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
                Assert.Equal(HttpVersion.Version20, answer.Version);
                Assert.True(expected[answer.length] == answer.Sha, $"stream {answer.i} ({answer.length} bytes) in wave {wave} got other bytes");
            }
        }
    }
}
