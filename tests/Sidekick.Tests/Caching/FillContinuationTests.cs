using System.Net;
using System.Net.Sockets;
using System.Text;
using Sidekick.Caching;
using Sidekick.Hosting;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A whole fill whose client leaves while another request reads it goes on: the rest is asked of the origin
/// (Range from where the client's body stopped, If-Match with the fill's ETag), so the reader gets every byte and
/// the entry is stored. Before, the reader was cut where the first client left.
/// </summary>
public sealed class FillContinuationTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const int Size = 4 * 1024 * 1024;

    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    [Fact]
    public async Task A_reader_of_a_fill_whose_client_left_gets_the_whole_body_and_the_entry_is_stored()
    {
        const string Path = "/bucket/left-early.bin";
        await using var run = await FillingAsync(Path);
        var (backend, item, client, cache) = (run.Backend, run.Item, run.Client, run.Cache);

        // A second request reads the fill from its spool.
        using var second = await client.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("HIT", Outcome(second));
        var body = await second.Content.ReadAsStreamAsync();
        var received = new MemoryStream();
        var buffer = new byte[64 * 1024];
        received.Write(buffer, 0, await body.ReadAsync(buffer));

        // The first client goes, long before the body's end.
        run.FirstLeaves();

        // Without the continuation this read failed where the first client's body had stopped.
        await body.CopyToAsync(received);
        Assert.Equal(item.Body, received.ToArray());

        // The origin was asked for the rest, of that version, once; the whole body only by the first client.
        var rest = Assert.Single(backend.Log, line => line.Contains("range=bytes=", StringComparison.Ordinal));
        Assert.Matches($"^GET {Path} range=bytes=[1-9][0-9]*- if-none-match= if-match={item.ETag} -> 206$", rest);
        Assert.Equal(1, backend.Served(Path));
        Assert.Equal(1, cache.Metrics.FillsContinued);
        Assert.Contains("sidekick_cache_fills_continued_total 1\n", await client.GetStringAsync("/.prometheus/metrics"), StringComparison.Ordinal);
        Assert.Matches($"cache fill of {Path} continued without its client: it left after [1-9][0-9]* of {Size} bytes", run.Output.ToString());

        // Stored as if the client had stayed: the next GET is a hit, the origin not asked again.
        await fixture.Eventually(() => cache.Metrics.FillsCompleted == 1 && cache.FillsInFlight == 0, "the continued fill to be stored");
        Assert.Equal(0, cache.Fills.AbandonedFor(FillAbandonReason.ClientGone));
        using var later = await client.GetAsync(Path);
        Assert.Equal("HIT", Outcome(later));
        Assert.Equal(item.Body, await later.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served(Path));
        Assert.Single(backend.Log, line => line.Contains("range=bytes=", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_fill_whose_version_changed_at_the_origin_is_not_continued_with_another_versions_bytes()
    {
        const string Path = "/bucket/changed-meanwhile.bin";
        await using var run = await FillingAsync(Path);
        var (backend, item, client, cache) = (run.Backend, run.Item, run.Client, run.Cache);
        using var second = await client.GetAsync(Path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("HIT", Outcome(second));
        var body = await second.Content.ReadAsStreamAsync();

        // The object is replaced at the origin (a new ETag), then the first client goes.
        var oldETag = item.ETag;
        item.ETag = "\"replaced\"";
        run.FirstLeaves();

        // The rest of the old version is not to be had: the origin refuses it (412), the fill is given up as
        // object_changed, and the reader is cut where the spool ended rather than handed the new version's bytes.
        await Assert.ThrowsAnyAsync<IOException>(() => body.CopyToAsync(Stream.Null));
        Assert.Contains(backend.Log, line => line.Contains($"if-match={oldETag} -> 412", StringComparison.Ordinal));
        await fixture.Eventually(() => cache.Fills.AbandonedFor(FillAbandonReason.ObjectChanged) == 1, "the fill given up as object_changed");
        await fixture.Eventually(() => run.Output.ToString().Contains($"cache fill of {Path} abandoned (object_changed)", StringComparison.Ordinal), "its --log line");
        Assert.Equal(0, cache.Metrics.FillsCompleted);
    }

    [Fact]
    public async Task A_fill_nobody_else_reads_ends_with_its_client_as_before()
    {
        await using var run = await FillingAsync("/bucket/alone.bin");
        var (backend, cache) = (run.Backend, run.Cache);
        run.FirstLeaves();

        // No request reads it: nothing more is asked of the origin for it.
        await fixture.Eventually(() => cache.Fills.AbandonedFor(FillAbandonReason.ClientGone) == 1, "the fill given up as client_gone");
        Assert.Equal(0, cache.Metrics.FillsContinued);
        Assert.DoesNotContain(backend.Log, line => line.Contains("range=bytes=", StringComparison.Ordinal));
    }

    /// <summary>
    /// An origin pacing a <see cref="Size"/>-byte object (about 1.3 s for its body: the first client leaves well before
    /// its end), a sidekick caching it, and a first client on a raw connection that asked for it and read its head and
    /// a first part of its body: its fill is running.
    /// </summary>
    private async Task<Filling> FillingAsync(string path)
    {
        var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put(path, Size);
        backend.ChunkDelayMs = 20;
        // However slow the machine, the first client's body does not end before it leaves: its last chunk waits.
        var lastChunk = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        backend.LastChunkWaitsFor = lastChunk.Task;
        var output = new StringWriter();
        var (instance, client) = await fixture.StartSidekickAsync([backend.Url], Integration.SidekickHarness.FastOptions with { Log = true }, stdout: TextWriter.Synchronized(output));
        var cache = instance.Server.Cache!;
        var first = new TcpClient();
        await first.ConnectAsync(IPAddress.Loopback, instance.Server.BaseAddress.Port);
        var stream = first.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: {client.BaseAddress!.Authority}\r\n\r\n"));
        await stream.ReadAtLeastAsync(new byte[256 * 1024], 256 * 1024);
        await fixture.Eventually(() => cache.FillsInFlight == 1, "the first client's fill");
        return new Filling(backend, item, instance, client, cache, first, output, lastChunk);
    }

    /// <param name="Output">The sidekick's --log lines and traces.</param>
    private sealed record Filling(
        CacheTestBackend Backend, OriginObject Item, SidekickInstance Instance, HttpClient Client, ResponseCache Cache, TcpClient First, StringWriter Output,
        TaskCompletionSource LastChunk)
        : IAsyncDisposable
    {
        /// <summary>The first client goes, with a reset: no more of its body is read.</summary>
        public void FirstLeaves()
        {
            First.Client.LingerState = new LingerOption(true, 0);
            First.Close();
            LastChunk.TrySetResult(); // its copy then fails on the reset connection, if it did not see the reset already
        }

        public async ValueTask DisposeAsync()
        {
            LastChunk.TrySetResult();
            First.Dispose();
            await Instance.DisposeAsync();
            await Backend.DisposeAsync();
        }
    }
}
