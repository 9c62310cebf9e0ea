using Microsoft.Extensions.Time.Testing;
using Sidekick.Caching;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A fill lease's age is judged on one clock, the store's: its Last-Modified against the Date of the same answer. The
/// sidecar's own clock may be off the store's by any amount (a MinIO box without NTP): here it is a fake clock set
/// minutes behind or seconds ahead of the real time s3rver keeps.
/// </summary>
public sealed class FillLeaseClockTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    /// <summary>
    /// Behind the store's clock, a lease a killed sidecar left looked written in the future: the miss waited for a fill
    /// that was not running, then filled without a lease, leaving the orphan in place.
    /// </summary>
    [Fact]
    public async Task A_sidecar_whose_clock_is_behind_the_stores_takes_over_a_lease_left_by_a_killed_sidecar()
    {
        var (leases, store, metrics, time) = Leases(DateTimeOffset.UtcNow - TimeSpan.FromMinutes(10));
        using var owned = store;
        using var counted = metrics;
        var key = Guid.NewGuid().ToString("N");
        var leaseKey = FillLeases.KeyOf(key);
        await store.WriteLeaseAsync(leaseKey, new FillLease("killed", 7, 1L << 26, 1L << 24, 2000), onlyIfAbsent: true, default);
        // Dead by the store's own clock: its Date is past the lease's Last-Modified by more than the lease's life.
        await Eventually.WaitUntilAsync(() => store.ReadLeaseAsync(leaseKey, default).Result?.Age > FillLeases.Lifetime + TimeSpan.FromSeconds(1),
            timeoutMs: 15_000, what: "the lease dead by the store's clock");

        var claim = leases.ClaimAsync(key, null, default);
        await PollUntilDecidedAsync(claim, time);

        var waits = string.Join(", ", Enum.GetValues<FillWaitOutcome>().Where(o => metrics.FillWaitsOf(o) > 0).Select(o => $"{o}={metrics.FillWaitsOf(o)}"));
        Assert.True((await claim).Kind == FillClaimKind.Holding && waits.Length == 0,
            $"a lease dead by the store's clock was waited for (claim {(await claim).Kind}, waits ended: {waits})");
        // Taken over: the claim's lease write goes on beside the origin request (FillClaim.ReadBack), so it is waited for.
        await Eventually.WaitUntilAsync(() => store.ReadLeaseAsync(leaseKey, default).Result?.Lease.Owner is not "killed",
            timeoutMs: 15_000, what: "the dead lease taken over");
        Assert.NotEqual("killed", (await store.ReadLeaseAsync(leaseKey, default))?.Lease.Owner);
    }

    /// <summary>
    /// Ahead of the store's clock by more than the lease's life, every live lease looked dead: the miss took it over
    /// and fetched the object from the origin a second time.
    /// </summary>
    [Fact]
    public async Task A_sidecar_whose_clock_is_ahead_of_the_stores_waits_for_a_live_lease()
    {
        var (leases, store, metrics, time) = Leases(DateTimeOffset.UtcNow + TimeSpan.FromSeconds(30));
        using var owned = store;
        using var counted = metrics;
        var key = Guid.NewGuid().ToString("N");
        var leaseKey = FillLeases.KeyOf(key);
        // Another sidecar's fill, written just now, with 16 MiB of 64 MiB after 1 s: about 3 s to go.
        await store.WriteLeaseAsync(leaseKey, new FillLease("live", 3, 1L << 26, 1L << 24, 1000), onlyIfAbsent: true, default);

        var claim = leases.ClaimAsync(key, null, default);
        await PollUntilDecidedAsync(claim, time);

        // Waited for it; the lease was never renewed after, so the wait ended when it had not changed for its life.
        Assert.True((await claim).Kind == FillClaimKind.Alone && metrics.FillWaitsOf(FillWaitOutcome.Dead) == 1,
            $"a live lease written a moment ago was taken for dead (claim {(await claim).Kind}; the lease now names '{(await store.ReadLeaseAsync(leaseKey, default))?.Lease.Owner}')");
        Assert.Equal("live", (await store.ReadLeaseAsync(leaseKey, default))?.Lease.Owner);
    }

    /// <summary>Advances the fake clock a poll at a time until the claim is decided (a minute of fake time at most).</summary>
    private static async Task PollUntilDecidedAsync(Task<FillClaim> claim, FakeTimeProvider time)
    {
        var until = time.GetUtcNow() + TimeSpan.FromMinutes(1);
        while (!claim.IsCompleted && time.GetUtcNow() < until)
        {
            time.Advance(FillLeases.Poll);
            await Task.Delay(5); // lets the lease read on s3rver answer; the outcome depends on the lease and the fake clock only
        }
    }

    private (FillLeases Leases, S3CacheStore Store, CacheMetrics Metrics, FakeTimeProvider Time) Leases(DateTimeOffset now)
    {
        var options = CacheOptions.FromEnvironment(fixture.Environment())!;
        var time = new FakeTimeProvider(now);
        var store = new S3CacheStore(options);
        var metrics = new CacheMetrics();
        return (new FillLeases(options, store, metrics, time), store, metrics, time);
    }
}
