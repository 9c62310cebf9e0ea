using Microsoft.Extensions.Time.Testing;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A store that takes a fill's upload request and then neither reads its body nor answers (a node gone without a
/// reset, a full disk behind it) must not hold the fill, its spool budget and its slot for the SDK's minutes per try.
/// </summary>
public sealed class StoreWriteStallTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    [Fact]
    public async Task A_part_the_store_stops_taking_is_cut_after_the_stall_timeout_and_the_fill_is_given_up_as_a_store_error()
    {
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.PartsWaitFor = hold.Task; // the store accepts each part's request and then reads and answers nothing
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var under = new FillsUnderTest(SpooledEnvironment(relay), time);
        var fills = under.Fills;
        var fill = StartThreePartFill(fills, "/stalled.bin", time);

        try
        {
            await Eventually.WaitUntilAsync(() => relay.Requests.Any(r => r.StartsWith("PUT ", StringComparison.Ordinal) && !r.EndsWith(".fill", StringComparison.Ordinal)),
                what: $"the first part sent; the store saw: {string.Join(", ", relay.Requests)}");
            // Short of the timeout nothing is cut, however long the store keeps the part.
            time.Advance(StoreWriteStall.Timeout - TimeSpan.FromSeconds(1));
            Assert.False(fill.Upload.IsCompleted);
            // Past it, counted from the last byte the store took (the HTTP client reads on until the socket is full).
            await Eventually.WaitUntilAsync(() =>
            {
                time.Advance(TimeSpan.FromSeconds(1));
                return fill.Upload.IsCompleted;
            }, what: "the stalled part cut");

            Assert.False(await fill.Upload);
            Assert.Equal(1, fills.AbandonedFor(FillAbandonReason.StoreError));
            Assert.True(under.Metrics.StoreErrors >= 1); // and the abort that follows, which s3rver refuses
            var line = Assert.Single(under.Abandonments);
            Assert.Contains("/stalled.bin store_error: the store took nothing more of part 1 and did not answer for 60 s", line, StringComparison.Ordinal);
            Assert.Equal(0, fills.InFlight);
            await Eventually.WaitUntilAsync(() => fills.SpoolUsed == 0, what: "the fill's spool budget given back");
        }
        finally
        {
            hold.TrySetResult();
        }
    }

    [Fact]
    public async Task A_multipart_completion_the_store_takes_minutes_over_is_not_cut_and_the_fill_is_stored()
    {
        // S3 documents that a completion may take minutes for a large object (it answers 200 at once and sends
        // whitespace while it joins the parts): its request shows no progress the watch could see, so it must not be
        // cut as a stalled write, or a multi-GiB fill would be given up as store_error just before it was stored.
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.CompletionsWaitFor = hold.Task;
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var under = new FillsUnderTest(SpooledEnvironment(relay), time);
        var fill = StartThreePartFill(under.Fills, "/joining.bin", time);

        try
        {
            await CompletionSentAsync(relay);

            // Three times the stall timeout, a second at a time as the watch's clock would see it: the store's
            // completion is still running, and the fill still waits for it.
            for (var waited = TimeSpan.Zero; waited < 3 * StoreWriteStall.Timeout; waited += TimeSpan.FromSeconds(1))
            {
                time.Advance(TimeSpan.FromSeconds(1));
            }

            Assert.False(fill.Upload.IsCompleted);
            hold.TrySetResult();
            Assert.True(await fill.Upload.WaitAsync(TimeSpan.FromSeconds(60)));
            Assert.Empty(under.Abandonments);
            Assert.Equal(0, under.Metrics.StoreErrors);
            Assert.NotNull(await under.Store.HeadAsync(fill.Key, CancellationToken.None));
        }
        finally
        {
            hold.TrySetResult();
        }
    }

    [Fact]
    public async Task A_multipart_completion_is_cut_after_fifteen_minutes_all_the_same()
    {
        // Its headers can come at once and its body never (a store gone silent mid-answer): the store client's own
        // timeout ends at the headers, so without this cut the fill would hold its spool and slot for good.
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.CompletionsWaitFor = hold.Task;
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var under = new FillsUnderTest(SpooledEnvironment(relay), time);
        var fill = StartThreePartFill(under.Fills, "/never-joined.bin", time);
        try
        {
            await CompletionSentAsync(relay);
            time.Advance(StoreWriteStall.CompletionTimeout - TimeSpan.FromSeconds(1));
            Assert.False(fill.Upload.IsCompleted);
            await Eventually.WaitUntilAsync(() =>
            {
                time.Advance(TimeSpan.FromSeconds(1));
                return fill.Upload.IsCompleted;
            }, what: "the completion cut");

            Assert.False(await fill.Upload);
            var line = Assert.Single(under.Abandonments);
            Assert.Contains("/never-joined.bin store_error: the store took nothing more of the multipart upload's completion and did not answer for 900 s", line, StringComparison.Ordinal);
            await Eventually.WaitUntilAsync(() => under.Fills.SpoolUsed == 0, what: "the fill's spool budget given back");
        }
        finally
        {
            hold.TrySetResult();
        }
    }

    /// <summary>The multipart upload's start and its completion reached the store (logged as they come, before being held).</summary>
    private static Task CompletionSentAsync(StoreRelay relay) =>
        Eventually.WaitUntilAsync(() => relay.Requests.Count(r => r.StartsWith("POST ", StringComparison.Ordinal)) == 2,
            what: $"the completion sent; the store saw: {string.Join(", ", relay.Requests)}");

    private Dictionary<string, string?> SpooledEnvironment(StoreRelay relay)
    {
        var environment = fixture.Environment(relay.Url);
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = Directory.CreateTempSubdirectory("sidekick-stall").FullName;
        return environment;
    }

    /// <summary>A fill of three 5 MiB parts (12 MiB), its whole body written and ended: its upload runs from the spool.</summary>
    private static CacheFill StartThreePartFill(CacheFills fills, string target, TimeProvider time)
    {
        const int Length = 12 * 1024 * 1024;
        var entry = new CachedResponse
        {
            Status = 200, Headers = [new("ETag", "\"v1\"")], Length = Length, ReceivedAt = time.GetUtcNow(), InitialAge = TimeSpan.Zero,
        };
        var fill = fills.Start(target.TrimStart('/') + "-" + Guid.NewGuid().ToString("N"), target, entry,
            new Dictionary<string, string> { ["sidekick"] = entry.Serialize() })!;
        var writer = fill.Writer(0, Length);
        Assert.True(writer.Offer(new byte[Length]));
        writer.End(clientGone: false);
        return fill;
    }
}
