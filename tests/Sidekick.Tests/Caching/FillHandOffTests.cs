using System.Net;
using System.Net.Sockets;
using System.Text;
using Sidekick.Caching;
using Sidekick.Hosting;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A whole fill is not held to its client's pace while other requests wait for it: when the client that missed takes
/// the body slower than the origin sends it (here it stops reading altogether) and a request reading the fill waits,
/// the rest is asked of the origin for the fill (Range from the first byte it lacks, If-Match with its ETag), and the
/// client goes on at its own pace on its own response. Before, the waiting request was held until the fill had been
/// silent for 30 s, then sent to the origin for the rest, and the entry was stored only when the slow client finished.
/// </summary>
public sealed class FillHandOffTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const int Size = 32 * 1024 * 1024;

    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    [Fact]
    public async Task A_request_waiting_on_a_fill_whose_client_stopped_reading_gets_the_body_at_the_origins_pace()
    {
        const string Path = "/bucket/stalled-client.bin";
        var backend = await CacheTestBackend.StartAsync();
        await using var _ = backend;
        var item = backend.Put(Path, Size);
        var output = new StringWriter();
        var (instance, client) = await fixture.StartSidekickAsync([backend.Url], Integration.SidekickHarness.FastOptions with { Log = true }, stdout: TextWriter.Synchronized(output));
        await using var __ = instance;
        var cache = instance.Server.Cache!;

        // The first client asks, reads a little of the body, and stops reading: its connection's buffers fill, and
        // the fill's copy waits for it.
        var (first, firstBytes) = await StopsReadingAsync(instance, client, Path);
        using var _first = first;
        var stream = first.GetStream();
        var buffer = new byte[256 * 1024];
        await fixture.Eventually(() => cache.FillsInFlight == 1, "the first client's fill");

        // A second request reads the fill, catches up with it and waits: it gets the whole body although the first
        // client reads nothing more (the bound is only there to fail rather than hang).
        using var second = await client.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("HIT", Outcome(second));
        using (var bound = new CancellationTokenSource(TimeSpan.FromSeconds(20)))
        {
            var received = new MemoryStream();
            await (await second.Content.ReadAsStreamAsync(bound.Token)).CopyToAsync(received, bound.Token);
            Assert.True(item.Body.AsSpan().SequenceEqual(received.ToArray()), "the waiting request's body is the object's, byte for byte");
        }

        // The origin was asked for the rest, of that version, once, for the fill; whole only by the first client.
        var rest = Assert.Single(backend.Log, line => line.Contains("range=bytes=", StringComparison.Ordinal));
        Assert.Matches($"^GET {Path} range=bytes=[1-9][0-9]*- if-none-match= if-match={item.ETag} -> 206$", rest);
        Assert.Equal(1, backend.Served(Path));
        Assert.Equal(1, cache.Metrics.FillsHandedOff);
        Assert.Equal(0, cache.Metrics.FillsContinued);
        Assert.Contains("sidekick_cache_fills_handed_off_total 1\n", await client.GetStringAsync("/.prometheus/metrics"), StringComparison.Ordinal);
        Assert.Matches($"cache fill of {Path} handed off from its client after [1-9][0-9]* of {Size} bytes", output.ToString());

        // Stored from the rest's fetch while the first client still reads nothing: the next GET is a hit.
        await fixture.Eventually(() => cache.Metrics.FillsCompleted == 1 && cache.FillsInFlight == 0, "the handed-off fill to be stored");
        using (var later = await client.GetAsync(Path))
        {
            Assert.Equal("HIT", Outcome(later));
            var stored = await later.Content.ReadAsByteArrayAsync();
            Assert.True(item.Body.AsSpan().SequenceEqual(stored), "the stored entry is the object, byte for byte");
        }

        // The first client reads on: its response, received on its own connection around the fill's buffers, is
        // the object's too, byte for byte.
        var head = Encoding.ASCII.GetString(firstBytes.GetBuffer(), 0, (int)Math.Min(firstBytes.Length, 4096));
        var headLength = head.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4;
        Assert.StartsWith("HTTP/1.1 200", head, StringComparison.Ordinal);
        while (firstBytes.Length < headLength + Size)
        {
            var read = await stream.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, headLength + Size - firstBytes.Length)));
            Assert.NotEqual(0, read);
            firstBytes.Write(buffer, 0, read);
        }

        Assert.True(item.Body.AsSpan().SequenceEqual(firstBytes.GetBuffer().AsSpan(headLength, Size)), "the slow client's body is the object's, byte for byte");
        Assert.Equal(1, backend.Served(Path));
        Assert.Single(backend.Log, line => line.Contains("range=bytes=", StringComparison.Ordinal));
        Assert.Equal(0, cache.Fills.AbandonedFor(FillAbandonReason.ClientTooSlow));
    }

    [Fact]
    public async Task A_request_that_begins_to_wait_on_a_held_back_fill_has_it_handed_off_at_once_not_at_the_next_tick()
    {
        // The cache's clock stands still but for one step shorter than a tick: no tick can look, so only the request
        // that begins to wait can have the fill handed off.
        const string Path = "/bucket/handed-off-on-wait.bin";
        var backend = await CacheTestBackend.StartAsync();
        await using var _ = backend;
        var item = backend.Put(Path, Size);
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        var (instance, client) = await fixture.StartSidekickAsync(backend, time: time);
        await using var __ = instance;
        var cache = instance.Server.Cache!;

        var (first, _) = await StopsReadingAsync(instance, client, Path);
        using var _first = first;
        CacheFill? fill = null;
        await fixture.Eventually(() => (fill = cache.Fills.Running(CacheKey.For(client.BaseAddress!.Authority, Path))) is not null, "the first client's fill");
        await SpooledFillTests.StalledAsync(fill!, "its first client"); // held back once its client's buffers are full

        time.Advance(FillHandOff.Tick - TimeSpan.FromMilliseconds(50));
        using var second = await client.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("HIT", Outcome(second));
        using (var bound = new CancellationTokenSource(TimeSpan.FromSeconds(20)))
        {
            var received = new MemoryStream();
            await (await second.Content.ReadAsStreamAsync(bound.Token)).CopyToAsync(received, bound.Token);
            Assert.True(item.Body.AsSpan().SequenceEqual(received.ToArray()), "the waiting request's body is the object's, byte for byte");
        }

        Assert.Equal(1, cache.Metrics.FillsHandedOff);
        Assert.Single(backend.Log, line => line.Contains("range=bytes=", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_fill_paced_by_a_slow_origin_is_not_handed_off_however_long_a_request_waits_on_it()
    {
        const string Path = "/bucket/slow-origin.bin";
        var backend = await CacheTestBackend.StartAsync();
        await using var _ = backend;
        var item = backend.Put(Path, 4 * 1024 * 1024);
        backend.ChunkDelayMs = 20; // 64 KiB every 20 ms: about 1.3 s for the body, the clients reading as fast as it comes
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var __ = instance;
        var cache = instance.Server.Cache!;

        using var first = await client.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("MISS", Outcome(first));
        var firstBody = await first.Content.ReadAsStreamAsync();
        var firstReceived = new MemoryStream();
        var buffer = new byte[64 * 1024];
        firstReceived.Write(buffer, 0, await firstBody.ReadAsync(buffer));
        using var second = await client.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("HIT", Outcome(second));

        var both = await Task.WhenAll(ReadRestAsync(firstBody, firstReceived), second.Content.ReadAsByteArrayAsync());
        Assert.True(item.Body.AsSpan().SequenceEqual(both[0]), "the first client's body");
        Assert.True(item.Body.AsSpan().SequenceEqual(both[1]), "the second request's body");

        // The waiting request waited for the origin, not for the client: nothing was asked of the origin twice.
        await fixture.Eventually(() => cache.Metrics.FillsCompleted == 1, "the fill to be stored");
        Assert.Equal(0, cache.Metrics.FillsHandedOff);
        Assert.DoesNotContain(backend.Log, line => line.Contains("range=bytes=", StringComparison.Ordinal));
        Assert.Equal(1, backend.Served(Path));
    }

    /// <summary>
    /// A first client on a raw connection with a small receive buffer: it asks for <paramref name="path"/>, reads the
    /// head and 256 KiB of the body (returned), and reads no more until the test says so.
    /// </summary>
    private static async Task<(TcpClient Client, MemoryStream Read)> StopsReadingAsync(SidekickInstance instance, HttpClient client, string path)
    {
        var first = new TcpClient { ReceiveBufferSize = 64 * 1024 };
        await first.ConnectAsync(IPAddress.Loopback, instance.Server.BaseAddress.Port);
        var stream = first.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: {client.BaseAddress!.Authority}\r\n\r\n"));
        var buffer = new byte[256 * 1024];
        var read = new MemoryStream();
        read.Write(buffer, 0, await stream.ReadAtLeastAsync(buffer, buffer.Length));
        return (first, read);
    }

    private static async Task<byte[]> ReadRestAsync(Stream body, MemoryStream received)
    {
        await body.CopyToAsync(received);
        return received.ToArray();
    }
}
