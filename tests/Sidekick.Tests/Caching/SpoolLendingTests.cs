using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A MISS's body is received into its fill's spool buffers and sent to the client from there (DirectSpoolWriter.Lend,
/// Networking.LendingPool): the spool gets the client's bytes without a copy, and a buffer the client's connection
/// still sends from is never handed to another fill (another client's bytes would overwrite what this one is sent).
/// </summary>
public sealed class SpoolLendingTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const int Large = DirectBufferBudget.LargeBufferSize;

    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    [Fact]
    public async Task Bytes_received_into_lent_spool_memory_are_spooled_as_received_and_that_memory_is_no_other_fills_while_lent()
    {
        using var under = DirectFills("sidekick-lend");
        if (under is null)
        {
            return; // fills write through the page cache: nothing is lent
        }

        const int Length = 3 * Large + 12_345; // the last buffer partly filled
        var body = RandomNumberGenerator.GetBytes(Length);
        var fill = Start(under, "lend-first", Length);
        var writer = fill.Writer(0, Length);
        using var spooled = fill.OpenReader(0, Length - 1)!;
        var inPlace = DirectSpoolWriter.BytesInPlace;

        // The bytes that came with the head are copied; the rest is "received" into what the fill lends, in pieces of
        // uneven sizes, as a socket delivers them. The loans are kept, as a client's connection that has not sent
        // them yet keeps them.
        Assert.True(writer.Offer(body.AsSpan(0, 1000)));
        var loans = new List<(IMemoryOwner<byte> Loan, int At, int Length)>();
        var at = 1000;
        var piece = 0;
        while (at < Length)
        {
            await writer.WhenWritable();
            var loan = writer.Lend(Length - at);
            Assert.NotNull(loan);
            Assert.True(loan.Memory.Length <= Length - at, "a loan reaches past the body's end");
            var received = Math.Min(loan.Memory.Length, 40_000 + (piece++ % 7 * 9_001));
            body.AsSpan(at, received).CopyTo(loan.Memory.Span);
            Assert.True(writer.Offer(loan.Memory.Span[..received]));
            loans.Add((loan, at, received));
            at += received;
        }

        writer.End(clientGone: false);
        Assert.True(DirectSpoolWriter.BytesInPlace - inPlace >= Length - 1000, $"{DirectSpoolWriter.BytesInPlace - inPlace} bytes found in place");
        var copy = new MemoryStream();
        await spooled.CopyToAsync(copy);
        Assert.Equal(body, copy.ToArray());
        Assert.True(await fill.Upload.WaitAsync(TimeSpan.FromSeconds(60)), "the fill was not stored");

        // Another fill now takes buffers (the first one's are written and it is over): none may be memory the first
        // client's connection still sends from. Its bytes would be what that client is sent.
        await FillWholeAsync(under, "lend-second", 0xA5);
        foreach (var (loan, from, length) in loans)
        {
            Assert.True(loan.Memory.Span[..length].SequenceEqual(body.AsSpan(from, length)), $"the lent bytes at {from} changed while lent");
            loan.Dispose();
        }
    }

    [Fact]
    public async Task A_fill_given_up_while_its_client_holds_lent_memory_leaves_that_memory_to_the_client()
    {
        using var under = DirectFills("sidekick-lend-abandoned");
        if (under is null)
        {
            return;
        }

        const int Length = 2 * Large;
        var fill = Start(under, "lend-abandoned", Length);
        var writer = fill.Writer(0, Length);
        var loan = writer.Lend(Length)!;
        Assert.NotNull(loan);
        var received = RandomNumberGenerator.GetBytes(100_000);
        received.CopyTo(loan.Memory.Span);
        Assert.True(writer.Offer(loan.Memory.Span[..received.Length]));

        // Given up (a store or spool failure, the object changed): the client is still being sent what it received.
        fill.Abandon(FillAbandonReason.SpoolError, "test");
        Assert.Null(writer.Lend(Length));
        await fixture.Eventually(() => under.Fills.SpoolUsed == 0, "the abandoned fill's spool let go");

        await FillWholeAsync(under, "lend-after-abandoned", 0x5A);
        Assert.True(loan.Memory.Span[..received.Length].SequenceEqual(received), "the given-up fill's lent bytes changed while lent");
        loan.Dispose();
    }

    [Fact]
    public async Task A_fill_handed_off_while_its_client_holds_lent_memory_takes_the_rest_where_that_client_cannot_write()
    {
        using var under = DirectFills("sidekick-lend-handoff");
        if (under is null)
        {
            return;
        }

        const int Length = 2 * Large;
        var body = RandomNumberGenerator.GetBytes(Length);
        var fill = Start(under, "lend-handoff", Length);
        var writer = fill.Writer(0, Length);
        using var spooled = fill.OpenReader(0, Length - 1)!; // a request reads the fill: it may be handed off
        var loan = writer.Lend(Length)!;
        Assert.NotNull(loan);
        body.AsSpan(0, 100_000).CopyTo(loan.Memory.Span);
        Assert.True(writer.Offer(loan.Memory.Span[..100_000]));

        // The client held the fill back: the rest comes from another response, from byte 100,000 on.
        var rest = writer.HandOff();
        Assert.NotNull(rest);
        Assert.Equal(100_000, rest.Position);
        Assert.Null(writer.Lend(Length));
        Assert.False(writer.Offer(body.AsSpan(100_000, 10)));
        Assert.Null(writer.HandOff());
        Assert.True(rest.Offer(body.AsSpan(100_000, 50_000)));

        // The client's connection goes on receiving its own response into the rest of what it was lent.
        loan.Memory.Span[100_000..].Fill(0xEE);
        Assert.True(rest.Offer(body.AsSpan(150_000)));
        rest.End(clientGone: false);
        var copy = new MemoryStream();
        await spooled.CopyToAsync(copy);
        Assert.True(body.AsSpan().SequenceEqual(copy.ToArray()), "the spool holds what the client's connection wrote after the hand-off");
        Assert.True(await fill.Upload.WaitAsync(TimeSpan.FromSeconds(60)), "the fill was not stored");
        loan.Dispose();
        await fixture.Eventually(() => DirectSpoolWriter.LentBytes == 0, "every lent buffer back in the pool");
    }

    [Fact]
    public async Task Misses_on_kept_alive_connections_are_sent_byte_for_byte_from_the_spool_buffers_they_were_received_into()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var first = backend.Put("/bucket/lent-1.bin", 5 * Large + 4097 + 13);
        var second = backend.Put("/bucket/lent-2.bin", 3 * Large + 1);
        var third = backend.Put("/bucket/lent-3.bin", 4 * Large + 777);
        var small = backend.Put("/bucket/lent-small.txt", 5000, cacheControl: "no-store");
        var spool = Directory.CreateTempSubdirectory("sidekick-lend-process").FullName;
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = spool;
        var (instance, client) = await fixture.StartSidekickAsync(backend, environment);
        await using var running = instance;
        using var another = new HttpClient { BaseAddress = client.BaseAddress };
        var inPlace = DirectSpoolWriter.BytesInPlace;

        // One connection, kept alive: a MISS, an uncached answer written after it (where the MISS's last buffer ended),
        // a second MISS; meanwhile another connection's MISS fills buffers of its own.
        var concurrent = another.GetAsync("/bucket/lent-3.bin");
        using (var miss = await client.GetAsync("/bucket/lent-1.bin"))
        {
            Assert.Equal("MISS", Outcome(miss));
            Assert.Equal(first.Body, await miss.Content.ReadAsByteArrayAsync());
        }

        using (var uncached = await client.GetAsync("/bucket/lent-small.txt"))
        {
            Assert.Equal(small.Body, await uncached.Content.ReadAsByteArrayAsync());
        }

        using (var miss = await client.GetAsync("/bucket/lent-2.bin"))
        {
            Assert.Equal("MISS", Outcome(miss));
            Assert.Equal(second.Body, await miss.Content.ReadAsByteArrayAsync());
        }

        using (var miss = await concurrent)
        {
            Assert.Equal("MISS", Outcome(miss));
            Assert.Equal(third.Body, await miss.Content.ReadAsByteArrayAsync());
        }

        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted == 3 && instance.Server.Cache.FillsInFlight == 0, "the three fills stored",
            instance.Server.Cache);
        foreach (var (path, item) in new[] { ("/bucket/lent-1.bin", first), ("/bucket/lent-2.bin", second), ("/bucket/lent-3.bin", third) })
        {
            using var hit = await client.GetAsync(path);
            Assert.Equal("HIT", Outcome(hit));
            Assert.Equal(item.Body, await hit.Content.ReadAsByteArrayAsync());
            Assert.Equal(1, backend.Served(path));
        }

        // On sidekick's own socket engine and HTTP/1.1 path (not the suite's passes on the .NET engine or YARP), the
        // bodies were received into the spool's buffers, not copied there; and the connections, idle now, hold none.
        if (SpooledFillTests.DirectIoSupported(spool) && Environment.GetEnvironmentVariable("SIDEKICK_IO") is null or "epoll" &&
            Environment.GetEnvironmentVariable("SIDEKICK_FORWARDER") is null)
        {
            var expected = first.Body.Length + second.Body.Length + third.Body.Length - 3 * 64 * 1024; // less what came with each head
            Assert.True(DirectSpoolWriter.BytesInPlace - inPlace >= expected, $"{DirectSpoolWriter.BytesInPlace - inPlace} of the bodies' bytes received in place");
            var metrics = await client.GetStringAsync("/.prometheus/metrics");
            Assert.Contains("sidekick_cache_spool_direct_bytes_total{how=\"received_in_place\"} ", metrics);
        }

        await fixture.Eventually(() => DirectSpoolWriter.LentBytes == 0, "every lent spool buffer back in the pool (no fill of any test running)");
    }

    [Fact]
    public async Task Clients_that_reset_their_connection_mid_miss_leave_every_other_clients_bytes_intact()
    {
        // Connections that die holding lent spool buffers (their pipes are torn down, not drained) while other misses
        // take buffers from the same pool: every complete response is still its own object's bytes, and nothing lent
        // stays out of the pool.
        await using var backend = await CacheTestBackend.StartAsync();
        var objects = Enumerable.Range(0, 6).Select(i => backend.Put($"/bucket/reset-{i}.bin", 3 * Large + 1000 * i + 7)).ToArray();
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = Directory.CreateTempSubdirectory("sidekick-lend-reset").FullName;
        var (instance, client) = await fixture.StartSidekickAsync(backend, environment);
        await using var running = instance;
        backend.ChunkDelayMs = 1; // the bodies take a moment: the resets come mid-body

        async Task ResetAfterAsync(string path, int bytes)
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(IPAddress.Loopback, instance.Server.BaseAddress.Port);
            var stream = tcp.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: {client.BaseAddress!.Authority}\r\n\r\n"));
            await stream.ReadAtLeastAsync(new byte[bytes], bytes, throwOnEndOfStream: false);
            tcp.Client.LingerState = new LingerOption(true, 0);
        }

        async Task ReadWholeAsync(int index)
        {
            using var reader = new HttpClient { BaseAddress = client.BaseAddress };
            using var response = await reader.GetAsync($"/bucket/reset-{index}.bin");
            Assert.Equal(objects[index].Body, await response.Content.ReadAsByteArrayAsync());
        }

        // Even objects: a client that resets after ~1 MiB first, then a whole reader of the same object; odd objects:
        // whole readers meanwhile, whose misses take the buffers the reset connections let go of.
        var work = new List<Task>();
        for (var i = 0; i < objects.Length; i++)
        {
            work.Add(i % 2 == 0 ? ResetAfterAsync($"/bucket/reset-{i}.bin", 1024 * 1024 + 333 * i) : ReadWholeAsync(i));
        }

        await Task.WhenAll(work);
        await Task.WhenAll(Enumerable.Range(0, objects.Length).Select(ReadWholeAsync));
        await fixture.Eventually(() => instance.Server.Cache!.FillsInFlight == 0, "the fills over", instance.Server.Cache);
        await Task.WhenAll(Enumerable.Range(0, objects.Length).Select(ReadWholeAsync)); // from the store now, or filled again
        await fixture.Eventually(() => DirectSpoolWriter.LentBytes == 0, "every lent spool buffer back in the pool (no fill of any test running)");
    }

    /// <summary>Another fill of four buffers' worth of <paramref name="value"/>, copied in and stored: it takes buffers from the pool.</summary>
    /// <summary>The fills of a cache whose spool takes O_DIRECT writes; null where it does not (nothing is lent there).</summary>
    private FillsUnderTest? DirectFills(string name)
    {
        var spool = Directory.CreateTempSubdirectory(name).FullName;
        if (!SpooledFillTests.DirectIoSupported(spool))
        {
            return null;
        }

        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = spool;
        return new FillsUnderTest(environment);
    }

    private static async Task FillWholeAsync(FillsUnderTest under, string key, byte value)
    {
        var fill = Start(under, key, 4 * Large);
        var writer = fill.Writer(0, 4 * Large);
        var filler = new byte[64 * 1024];
        Array.Fill(filler, value);
        for (var written = 0; written < 4 * Large; written += filler.Length)
        {
            await writer.WhenWritable();
            Assert.True(writer.Offer(filler));
        }

        writer.End(clientGone: false);
        Assert.True(await fill.Upload.WaitAsync(TimeSpan.FromSeconds(60)), $"{key} was not stored");
    }

    private static CacheFill Start(FillsUnderTest under, string key, long length)
    {
        var entry = new CachedResponse
        {
            Status = 200, Headers = [new("ETag", $"\"{key}\"")], Length = length, ReceivedAt = under.Time.GetUtcNow(), InitialAge = TimeSpan.Zero,
        };
        return under.Fills.Start(key, $"/bucket/{key}.bin", entry, new Dictionary<string, string> { ["sidekick"] = entry.Serialize() })!;
    }
}
