using Microsoft.Extensions.Time.Testing;
using Sidekick.Caching;
using Sidekick.Hosting;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Sidecars sharing the bucket coordinate their fills through leases: a miss that finds another sidecar filling
/// the same entry waits for it to reach the store instead of fetching the object from the origin again, unless
/// that fill would take longer than SIDEKICK_CACHE_FILL_WAIT or its sidecar stopped renewing it.
/// </summary>
public sealed class FillLeaseTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    /// <summary>Two sidecars of one origin sharing the bucket, each called with the origin's Host (the caller disposes them).</summary>
    private async Task<(SidekickInstance One, HttpClient OneClient, SidekickInstance Two, HttpClient TwoClient)> StartTwoSidecarsAsync(
        CacheTestBackend backend, Dictionary<string, string?> environment)
    {
        var (one, oneClient) = await fixture.StartSidekickAsync(backend, environment);
        var (two, twoClient) = await fixture.StartSidekickAsync(backend, environment);
        oneClient.DefaultRequestHeaders.Host = "minio.example:9000";
        twoClient.DefaultRequestHeaders.Host = "minio.example:9000";
        return (one, oneClient, two, twoClient);
    }

    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    [Theory]
    [InlineData(false)] // s3rver: If-None-Match ignored, the lease is looked up first and read back
    [InlineData(true)] // as AWS S3 and MinIO: one conditional create
    public async Task A_miss_on_a_second_sidecar_waits_for_the_first_ones_fill_instead_of_asking_the_origin(bool conditionalWrites)
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/slow-{conditionalWrites}-{Guid.NewGuid():N}.bin"; // the bucket is shared by every test of the class
        var item = backend.Put(path, 4 * 1024 * 1024);
        backend.ChunkDelayMs = 15; // 64 chunks of 64 KiB: the first fill's rate is measured over about a second
        // The first fill's last chunk waits until the second sidecar is seen waiting on the lease: on a busy host the
        // fill could otherwise end before the second miss looks, which then finds the entry stored and never waits.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        backend.LastChunkWaitsFor = release.Task;
        // One relay per sidecar (both in front of the same s3rver bucket), so the second one's lease reads are its own.
        await using var relayOne = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites);
        await using var relayTwo = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites);
        var (one, oneClient) = await fixture.StartSidekickAsync(backend, fixture.Environment(relayOne.Url));
        var (two, twoClient) = await fixture.StartSidekickAsync(backend, fixture.Environment(relayTwo.Url));
        oneClient.DefaultRequestHeaders.Host = "minio.example:9000";
        twoClient.DefaultRequestHeaders.Host = "minio.example:9000";
        await using var first = one;
        await using var second = two;

        var filling = oneClient.GetAsync(path);
        using var store = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        var leaseKey = FillLeases.KeyOf(CacheKey.For("minio.example:9000", path));
        await Eventually.WaitUntilAsync(() => store.ReadLeaseAsync(leaseKey, default).Result is not null,
            what: $"the first sidecar's lease; the store saw: {string.Join(", ", relayOne.Requests)}; first done: {filling.IsCompleted}");

        var waiting = twoClient.GetAsync(path);
        // Its claim reads the lease once; a second read is a poll of its wait.
        await Eventually.WaitUntilAsync(() => relayTwo.Requests.Count(r => r.EndsWith(".fill", StringComparison.Ordinal) && (r.StartsWith("GET ", StringComparison.Ordinal) || r.StartsWith("HEAD ", StringComparison.Ordinal))) >= 2,
            what: $"the second sidecar waiting on the lease; its store requests: {string.Join(", ", relayTwo.Requests)}");
        release.SetResult();

        using var waited = await waiting;
        using var miss = await filling;
        Assert.Equal("MISS", Outcome(miss));
        Assert.Equal(item.Body, await miss.Content.ReadAsByteArrayAsync());
        var waits = string.Join(", ", Enum.GetValues<FillWaitOutcome>().Select(o => $"{o} {two.Server.Cache!.Metrics.FillWaitsOf(o)}"));
        Assert.True(Outcome(waited) == "HIT", $"the second sidecar answered {Outcome(waited)}; its waits: {waits}");
        Assert.Equal(item.Body, await waited.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served(path));
        Assert.Equal(1, two.Server.Cache!.Metrics.FillWaitsOf(FillWaitOutcome.Stored));
        // Once the entry is in the store the lease says so for a while (a miss that raced the commit looks in the
        // store again), then goes.
        await Eventually.WaitUntilAsync(() => store.ReadLeaseAsync(leaseKey, default).Result is null,
            timeoutMs: (int)(FillLeases.Lifetime + TimeSpan.FromSeconds(15)).TotalMilliseconds, what: "the stored lease removed");
    }

    [Fact]
    public async Task First_claims_made_at_once_learn_the_stores_way_with_one_probe()
    {
        await using var conditional = await StoreRelay.StartAsync(fixture.S3.Url);
        var (leases, store, metrics, _) = Leases(conditional.Url);
        using var stores = store;
        using var counted = metrics;

        var claims = Enumerable.Range(0, 4).Select(_ => leases.ClaimAsync(Guid.NewGuid().ToString("N"), null, default)).ToArray();
        await Task.WhenAll(claims);

        Assert.All(claims, claim => Assert.Equal(FillClaimKind.Holding, claim.Result.Kind));
        var probes = conditional.Requests.Where(r => r.Contains("sidekick-conditional-write-probe-", StringComparison.Ordinal)).ToArray();
        Assert.True(probes.Length == 3, $"one probe (a write, a conditional create, a delete); the store saw: {string.Join(", ", probes)}");
        Assert.Equal(0, metrics.StoreErrors);
    }

    [Fact]
    public async Task A_lease_renewal_the_store_refuses_does_not_take_the_lease_from_its_fill()
    {
        // A busy store refuses one renewal (503 SlowDown to the write and to the AWS SDK's second try). The filler goes
        // on renewing at the next tick: when it gave up at the first refusal, its lease went (or, the store being slow,
        // died unrenewed) while the fill went on, and the miss waiting on the other sidecar fetched the object again.
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/renewal-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 4 * 1024 * 1024);
        backend.ChunkDelayMs = 40; // 64 chunks of 64 KiB: the body takes about 2.6 s, over two renewals
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var environment = fixture.Environment(relay.Url);
        var (one, oneClient, two, twoClient) = await StartTwoSidecarsAsync(backend, environment);
        await using var first = one;
        await using var second = two;
        var leaseWrite = $"PUT /cache/{CacheFixture.ObjectName(FillLeases.KeyOf(CacheKey.For("minio.example:9000", path)))}";

        relay.LeaseRenewalsToRefuse = 2;
        var filling = oneClient.GetAsync(path);
        // In the store, not only asked for: a second miss that looked before the write landed would take a lease too.
        using var store = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        var leaseKey = FillLeases.KeyOf(CacheKey.For("minio.example:9000", path));
        await Eventually.WaitUntilAsync(() => relay.Requests.Contains(leaseWrite) && store.ReadLeaseAsync(leaseKey, default).Result is not null,
            what: "the first sidecar's lease");
        using var waited = await twoClient.GetAsync(path);
        using var miss = await filling;

        Assert.Equal(0, relay.LeaseRenewalsToRefuse); // the renewal was refused, and tried again by the SDK
        Assert.Equal("MISS", Outcome(miss));
        var waits = string.Join(", ", Enum.GetValues<FillWaitOutcome>().Select(o => $"{o} {two.Server.Cache!.Metrics.FillWaitsOf(o)}"));
        Assert.True(Outcome(waited) == "HIT", $"the second sidecar answered {Outcome(waited)}; its waits: {waits}; the store saw: {string.Join(", ", relay.Requests)}");
        Assert.Equal(item.Body, await waited.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served(path));
    }

    [Fact]
    public async Task A_miss_claims_its_lease_without_waiting_for_100_continue_and_uploads_its_parts_with_it()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/continue-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 7 * 1024 * 1024); // two parts: 5 MiB and 2 MiB
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (sidekick, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(relay.Url));
        await using var _ = sidekick;

        using var miss = await client.GetAsync(path);
        Assert.Equal("MISS", Outcome(miss));
        Assert.Equal(item.Body, await miss.Content.ReadAsByteArrayAsync());
        await Eventually.WaitUntilAsync(() => sidekick.Server.Cache!.Metrics.FillsCompleted == 1, what: "the fill stored");

        // The lease writes are empty objects on the miss's way to its first byte: a round trip waiting for 100
        // Continue would buy nothing. The parts (over 1 MiB each) still ask, so a store refusing them says so first.
        var leaseWrites = relay.Requests.Count(r => r.StartsWith("PUT ", StringComparison.Ordinal) && r.EndsWith(".fill", StringComparison.Ordinal));
        Assert.True(leaseWrites >= 1, $"no lease write; the store saw: {string.Join(", ", relay.Requests)}");
        var asked = relay.ContinueAsked.ToArray();
        Assert.DoesNotContain(asked, r => r.Contains(".fill", StringComparison.Ordinal));
        Assert.Equal(2, asked.Count(r => r.StartsWith("PUT ", StringComparison.Ordinal) && r.Contains("partNumber=", StringComparison.Ordinal)));
    }

    [Theory]
    [InlineData(false, "a first miss")] // s3rver: If-None-Match ignored
    [InlineData(true, "a first miss")] // as AWS S3 and MinIO
    [InlineData(false, "its start")] // learned once the store answered, before any request
    [InlineData(true, "its start")]
    public async Task Once_the_stores_way_is_learned_a_whole_get_reads_the_lease_while_its_lookup_runs(bool conditionalWrites, string learnedBy)
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/ahead-{conditionalWrites}-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 256 * 1024);
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites);
        var (sidekick, client) = learnedBy == "its start" ? await StartedSidekickAsync(backend, relay) : await LearnedSidekickAsync(backend, relay);
        await using var _ = sidekick;

        // The lookup is held at the store: the lease's HEAD must come while it waits, not after its answer.
        var leaseHead = $"HEAD /cache/{CacheFixture.ObjectName(FillLeases.KeyOf(CacheKey.For("minio.example:9000", path)))}";
        var lookup = $"GET /cache/{CacheFixture.ObjectName(CacheKey.For("minio.example:9000", path))}"; // a whole GET's lookup opens the body too
        var release = new TaskCompletionSource();
        relay.EntryLookupsWaitFor = release.Task;
        var miss = client.GetAsync(path);
        await Eventually.WaitUntilAsync(() => relay.Requests.Contains(lookup), what: $"the lookup; the store saw: {string.Join(", ", relay.Requests)}");
        await Eventually.WaitUntilAsync(() => relay.Requests.Contains(leaseHead),
            what: $"the lease read while the lookup was held; the store saw: {string.Join(", ", relay.Requests)}");
        relay.EntryLookupsWaitFor = null;
        release.SetResult();

        using var response = await miss;
        Assert.Equal("MISS", Outcome(response));
        Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync());
        // One read of the lease before it was taken (on s3rver the read-back after the write is the second).
        var beforeTaken = relay.Requests.TakeWhile(r => !r.StartsWith("PUT" + leaseHead["HEAD".Length..], StringComparison.Ordinal));
        Assert.Equal(1, beforeTaken.Count(r => r == leaseHead));
    }

    [Theory]
    [InlineData(false)] // s3rver: If-None-Match ignored
    [InlineData(true)] // as AWS S3 and MinIO
    public async Task Lookups_of_an_entry_stored_or_found_here_lately_skip_the_lease_read(bool conditionalWrites)
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/known-{conditionalWrites}-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 256 * 1024);
        await using var relayOne = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites);
        await using var relayTwo = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites);
        var (one, oneClient) = await LearnedSidekickAsync(backend, relayOne);
        var (two, twoClient) = await LearnedSidekickAsync(backend, relayTwo);
        await using var first = one;
        await using var second = two;
        var leaseKey = CacheFixture.ObjectName(FillLeases.KeyOf(CacheKey.For("minio.example:9000", path)));
        var leaseHead = $"HEAD /cache/{leaseKey}";

        // Stored through the first sidecar, whose lease is gone once it said "stored" for its lifetime.
        using (var miss = await oneClient.GetAsync(path))
        {
            Assert.Equal("MISS", Outcome(miss));
        }

        await Eventually.WaitUntilAsync(() => one.Server.Cache!.Metrics.FillsCompleted == 1 && relayOne.Requests.Contains($"DELETE /cache/{leaseKey}"),
            timeoutMs: (int)(FillLeases.Lifetime + TimeSpan.FromSeconds(15)).TotalMilliseconds, what: $"the entry stored and its lease removed; the store saw: {string.Join(", ", relayOne.Requests)}");
        var leaseReads = relayOne.Requests.Count(r => r == leaseHead);
        using (var hit = await oneClient.GetAsync(path))
        {
            Assert.Equal("HIT", Outcome(hit));
            Assert.Equal(item.Body, await hit.Content.ReadAsByteArrayAsync());
        }

        Assert.Equal(leaseReads, relayOne.Requests.Count(r => r == leaseHead));

        // Another sidecar reads the lease beside its first lookup of the entry, not beside the ones after it.
        for (var i = 0; i < 2; i++)
        {
            using var hit = await twoClient.GetAsync(path);
            Assert.Equal("HIT", Outcome(hit));
            Assert.Equal(item.Body, await hit.Content.ReadAsByteArrayAsync());
        }

        Assert.Equal(1, relayTwo.Requests.Count(r => r == leaseHead));
    }

    [Theory]
    [InlineData(false)] // s3rver: the lease write, then its read-back
    [InlineData(true)] // as AWS S3 and MinIO: the conditional create
    public async Task A_lease_written_for_a_client_that_left_meanwhile_is_removed_only_after_the_store_took_it(bool conditionalWrites)
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/left-{Guid.NewGuid():N}.bin";
        backend.Put(path, 256 * 1024);
        var origin = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        backend.HeadsWaitFor = origin.Task; // the origin has not answered when the client leaves
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites);
        var (sidekick, client) = await LearnedSidekickAsync(backend, relay);
        await using var _ = sidekick;
        var leaseObject = $"/cache/{CacheFixture.ObjectName(FillLeases.KeyOf(CacheKey.For("minio.example:9000", path)))}";
        var store = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.LeaseWritesWaitFor = store.Task;

        // The client leaves while its lease write is held at the store. A write cut short on sidekick's side may still be
        // carried out by a store that had the whole request, after the removal that follows: the lease stays for good.
        using var leaving = new CancellationTokenSource();
        var miss = client.GetAsync(path, leaving.Token);
        await Eventually.WaitUntilAsync(() => relay.Requests.Any(r => r.StartsWith("PUT " + leaseObject, StringComparison.Ordinal)) && backend.Arrivals.Contains($"GET {path}"),
            what: $"the lease write held and the origin asked; the store saw: {string.Join(", ", relay.Requests)}");
        await leaving.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => miss);
        relay.LeaseWritesWaitFor = null;
        store.SetResult();
        origin.SetResult();
        await Eventually.WaitUntilAsync(() => relay.Requests.Contains("DELETE " + leaseObject),
            what: $"the lease removed; the store saw: {string.Join(", ", relay.Requests)}");

        // The removal came after the store had carried out the write, so nothing is left in the bucket.
        var removal = relay.Requests.ToList().IndexOf("DELETE " + leaseObject);
        Assert.Contains(relay.LeaseWritesAnswered, write => write.Path == leaseObject && write.Seen <= removal);
        using var direct = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        await Eventually.WaitUntilAsync(() => direct.HeadAsync(FillLeases.KeyOf(CacheKey.For("minio.example:9000", path)), default).GetAwaiter().GetResult() is null,
            what: "the lease gone from the bucket");
    }

    [Theory]
    [InlineData("write", false)] // s3rver: the lease write, then its read-back
    [InlineData("read-back", false)]
    [InlineData("create", true)] // as AWS S3 and MinIO: the conditional create
    public async Task The_origin_request_goes_out_while_the_lease_is_taken(string held, bool conditionalWrites)
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/{held}-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 256 * 1024);
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites);
        var (sidekick, client) = await LearnedSidekickAsync(backend, relay);
        await using var _ = sidekick;

        // The lease write, or its read-back, is held at the store: the origin request must not wait for it.
        var leaseWrite = $"PUT /cache/{CacheFixture.ObjectName(FillLeases.KeyOf(CacheKey.For("minio.example:9000", path)))}";
        var release = new TaskCompletionSource();
        if (held is "write" or "create")
        {
            relay.LeaseWritesWaitFor = release.Task;
        }
        else
        {
            relay.LeaseReadBacksWaitFor = release.Task;
        }

        var miss = client.GetAsync(path);
        await Eventually.WaitUntilAsync(() => backend.Arrivals.Contains($"GET {path}"),
            what: $"the origin request while the lease's {held} is held; the store saw: {string.Join(", ", relay.Requests)}");
        Assert.Contains(conditionalWrites ? leaseWrite + " if-none-match" : leaseWrite, relay.Requests); // asked for (and, but for "read-back", still held)
        relay.LeaseWritesWaitFor = null;
        relay.LeaseReadBacksWaitFor = null;
        release.SetResult();

        using var response = await miss;
        Assert.Equal("MISS", Outcome(response));
        Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync());
        // The lease is this sidecar's: it holds it (its last write says "stored") and stores the entry.
        var metrics = sidekick.Server.Cache!.Metrics;
        await Eventually.WaitUntilAsync(() => metrics.FillsCompleted == 1 && relay.Requests.Count(r => r == leaseWrite) >= 2,
            what: $"the fill stored under its lease; the store saw: {string.Join(", ", relay.Requests)}");
        using var direct = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        Assert.NotNull(await direct.HeadAsync(CacheKey.For("minio.example:9000", path), default));
        Assert.Equal(0, metrics.StoreErrors); // the claim did not give up on a store request held for long
        Assert.Equal(0, metrics.FillRacesLost(fetchedTwice: false) + metrics.FillRacesLost(fetchedTwice: true));
    }

    [Fact]
    public async Task A_lease_write_replaced_before_the_origin_answers_leaves_the_origins_answer_unread_and_waits_for_the_other_fill()
    {
        await using var race = await LeaseRaceAsync("yield", 4 * 1024 * 1024);
        var (backend, relay, client, metrics, direct, path, item) = (race.Backend, race.Relay, race.Client, race.Metrics, race.Direct, race.Path, race.Item);

        // Another sidecar's lease write lands just after this one's, and the origin is slower to answer than the store.
        var originHeld = new TaskCompletionSource();
        backend.HeadsWaitFor = originHeld.Task;
        var miss = client.GetAsync(path);
        await Eventually.WaitUntilAsync(() => metrics.FillRacesLost(fetchedTwice: false) == 1,
            what: $"the read-back naming the other sidecar; the store saw: {string.Join(", ", relay.Requests)}");
        backend.HeadsWaitFor = null;
        originHeld.SetResult();

        await OtherFillEndsUnstoredAsync(miss, direct, race.LeaseKey, backend, path, item, metrics);
    }

    [Fact]
    public async Task A_conditional_create_refused_before_the_origin_answers_leaves_the_origins_answer_unread_and_waits_for_the_other_fill()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/refused-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 4 * 1024 * 1024);
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: true);
        var (sidekick, client) = await LearnedSidekickAsync(backend, relay);
        await using var _ = sidekick;
        using var direct = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        var leaseKey = FillLeases.KeyOf(CacheKey.For("minio.example:9000", path));
        var metrics = sidekick.Server.Cache!.Metrics;

        // The origin is slower to answer than the store, and another sidecar creates the lease after this one found
        // none and while this one's create is on its way.
        var originHeld = new TaskCompletionSource();
        backend.HeadsWaitFor = originHeld.Task;
        var createHeld = new TaskCompletionSource();
        relay.LeaseWritesWaitFor = createHeld.Task;
        var miss = client.GetAsync(path);
        var create = $"PUT /cache/{CacheFixture.ObjectName(leaseKey)} if-none-match";
        await Eventually.WaitUntilAsync(() => relay.Requests.Contains(create) && backend.Arrivals.Contains($"GET {path}"),
            what: $"the create and the origin request, both on their way; the store saw: {string.Join(", ", relay.Requests)}");
        await direct.WriteLeaseAsync(leaseKey, new FillLease("other", 1, -1, 0, 0), onlyIfAbsent: false, default);
        relay.LeaseWritesWaitFor = null;
        createHeld.SetResult();
        await Eventually.WaitUntilAsync(() => metrics.FillRacesLost(fetchedTwice: false) == 1,
            what: $"the refused create's lease read naming the other sidecar; the store saw: {string.Join(", ", relay.Requests)}");
        backend.HeadsWaitFor = null;
        originHeld.SetResult();

        await OtherFillEndsUnstoredAsync(miss, direct, leaseKey, backend, path, item, metrics);
    }

    [Fact]
    public async Task A_lease_write_replaced_after_the_origin_answered_is_fetched_here_and_stored_only_by_the_other_sidecar()
    {
        await using var race = await LeaseRaceAsync("twice", 256 * 1024); // one PUT, ready as soon as the body is in
        var (relay, client, metrics, direct, path, item) = (race.Relay, race.Client, race.Metrics, race.Direct, race.Path, race.Item);
        var release = new TaskCompletionSource();
        relay.LeaseReadBacksWaitFor = release.Task;
        // The whole body reaches the client while the read-back is held: the fill must not be uploaded meanwhile.
        using var response = await client.GetAsync(path);
        Assert.Equal("MISS", Outcome(response));
        Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync());
        relay.LeaseReadBacksWaitFor = null;
        release.SetResult();

        await Eventually.WaitUntilAsync(() => metrics.FillRacesLost(fetchedTwice: true) == 1, what: "the race counted as fetched twice");
        await Eventually.WaitUntilAsync(() => race.Sidekick.Server.Cache!.Fills.InFlight == 0, what: "the fill ended");
        Assert.Null(await direct.HeadAsync(CacheKey.For("minio.example:9000", path), default)); // the other sidecar's to store
        Assert.DoesNotContain(relay.Requests, r => r == $"PUT /cache/{CacheFixture.ObjectName(CacheKey.For("minio.example:9000", path))}");
        Assert.Equal("other", (await direct.ReadLeaseAsync(race.LeaseKey, default))!.Value.Lease.Owner); // not removed: not ours
        Assert.Equal(0, metrics.FillsCompleted);
        await Eventually.WaitUntilAsync(() => race.Log.ToString().Contains($"cache fill of {path} left to another sidecar", StringComparison.Ordinal),
            what: "the --log line for the object fetched twice");
    }

    [Fact]
    public async Task A_miss_while_the_first_sidecar_uploads_a_body_it_already_has_waits_for_that_upload()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/uploading-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, 12 * 1024 * 1024); // three parts, at full speed: uploaded after the body
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        relay.PartDelay = TimeSpan.FromMilliseconds(700); // the upload takes about 2 s after the client has its body
        var environment = fixture.Environment(relay.Url);
        var (one, oneClient, two, twoClient) = await StartTwoSidecarsAsync(backend, environment);
        await using var first = one;
        await using var second = two;

        using var miss = await oneClient.GetAsync(path);
        Assert.Equal("MISS", Outcome(miss));
        Assert.Equal(0, one.Server.Cache!.Metrics.FillsCompleted); // still uploading

        using var waited = await twoClient.GetAsync(path);
        var waits = string.Join(", ", Enum.GetValues<FillWaitOutcome>().Select(o => $"{o} {two.Server.Cache!.Metrics.FillWaitsOf(o)}"));
        Assert.True(Outcome(waited) == "HIT", $"the second sidecar answered {Outcome(waited)}; its waits: {waits}; the store saw: {string.Join(", ", relay.Requests)}");
        Assert.Equal(item.Body, await waited.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, backend.Served(path));
    }

    [Fact]
    public async Task On_a_store_that_honours_conditional_writes_a_claim_is_one_create_and_never_replaces_a_live_lease()
    {
        await using var conditional = await StoreRelay.StartAsync(fixture.S3.Url);
        var (one, oneStore, oneMetrics, _) = Leases(conditional.Url);
        var (two, twoStore, twoMetrics, twoTime) = Leases(conditional.Url);
        using var stores = oneStore;
        using var otherStore = twoStore;
        using var counted = oneMetrics;
        using var otherCounted = twoMetrics;
        var key = Guid.NewGuid().ToString("N");
        var leaseKey = FillLeases.KeyOf(key);

        using var direct = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!); // the test's own reads, not logged

        var taken = await one.ClaimAsync(key, null, default);
        Assert.Equal(FillClaimKind.Holding, taken.Kind);
        Assert.Equal([$"PUT /cache/{CacheFixture.ObjectName(leaseKey)} if-none-match"], conditional.Requests.Where(r => r.Contains(leaseKey, StringComparison.Ordinal)));
        var held = (await direct.ReadLeaseAsync(leaseKey, default))!.Value.Lease;

        // The second sidecar's create is refused: it reads the lease and waits; the lease still names the first.
        var waiting = two.ClaimAsync(key, null, default);
        await Eventually.WaitUntilAsync(() => conditional.Requests.Any(r => r == $"HEAD /cache/{CacheFixture.ObjectName(leaseKey)}"), what: "the second sidecar reading the lease");
        Assert.False(waiting.IsCompleted);
        Assert.Equal(held.Owner, (await direct.ReadLeaseAsync(leaseKey, default))!.Value.Lease.Owner);

        // Nothing was stored: the lease goes, and the waiter looks in the store (then fills on its own).
        one.Hold(leaseKey, Task.FromResult<CacheFill?>(null));
        while (!waiting.IsCompleted && twoTime.GetUtcNow() - DateTimeOffset.UtcNow < TimeSpan.FromMinutes(1))
        {
            twoTime.Advance(FillLeases.Poll);
            await Task.Delay(5); // lets the store answer; the outcome depends on the lease, not on this pause
        }

        Assert.True(FillClaimKind.OtherEnded == (await waiting).Kind, $"{(await waiting).Kind}; store saw: {string.Join(", ", conditional.Requests)}; waits: dead {twoMetrics.FillWaitsOf(FillWaitOutcome.Dead)}, store errors {twoMetrics.StoreErrors}");
    }

    [Fact]
    public async Task Of_two_sidecars_that_took_the_lease_at_once_on_a_store_ignoring_the_condition_only_the_one_named_uploads()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var under = new FillsUnderTest(fixture.Environment(), time);
        var store = under.Store;
        var leases = new FillLeases(under.Options, store, under.Metrics, time);
        var key = "raced-" + Guid.NewGuid().ToString("N");
        var claim = await ClaimedAsync(leases, key);
        Assert.Equal(FillClaimKind.Holding, claim.Kind);
        // The other sidecar's write landed after this one's read back: s3rver keeps it.
        await store.WriteLeaseAsync(claim.LeaseKey!, new FillLease("other", 1, -1, 0, 0), onlyIfAbsent: false, default);
        var entry = new CachedResponse
        {
            Status = 200, Headers = [new("ETag", "\"v1\"")], Length = 1000, ReceivedAt = time.GetUtcNow(), InitialAge = TimeSpan.Zero,
        };
        var fill = under.Fills.Start(key, "/raced", entry, new Dictionary<string, string> { ["sidekick"] = entry.Serialize() })!;

        leases.Hold(claim.LeaseKey!, Task.FromResult<CacheFill?>(fill));
        while (!fill.LeftToAnother && time.GetUtcNow() - DateTimeOffset.UtcNow < TimeSpan.FromMinutes(1))
        {
            time.Advance(FillLeases.Renewal);
            await Task.Delay(5); // lets the lease read on s3rver answer; the outcome depends on the lease only
        }

        var writer = fill.Writer(0, entry.Length);
        Assert.True(writer.Offer(new byte[1000]));
        writer.End(clientGone: false);
        Assert.True(await fill.Upload); // done: the entry is the other sidecar's to store
        Assert.Null(await store.HeadAsync(key, default));
        Assert.Equal(0, under.Metrics.FillsCompleted);
        Assert.Equal("other", (await store.ReadLeaseAsync(claim.LeaseKey!, default))!.Value.Lease.Owner); // not removed: not ours
    }

    [Fact]
    public async Task A_fill_that_would_not_finish_within_the_wait_is_not_waited_for()
    {
        var (leases, store, metrics, _) = Leases();
        using var owned = store;
        using var counted = metrics;
        var key = Guid.NewGuid().ToString("N");
        // Another sidecar has 1 MiB of 1 GiB after a second: about 17 minutes to go, far beyond the 10 s wait.
        await store.WriteLeaseAsync(FillLeases.KeyOf(key), new FillLease("other", 3, 1L << 30, 1L << 20, 1000), onlyIfAbsent: true, default);

        var claim = await leases.ClaimAsync(key, null, default);

        Assert.Equal(FillClaimKind.Alone, claim.Kind);
        Assert.Equal(1, metrics.FillWaitsOf(FillWaitOutcome.TooSlow));
    }

    [Fact]
    public async Task A_lease_no_longer_renewed_is_dead_and_not_waited_for_any_longer()
    {
        var (leases, store, metrics, time) = Leases();
        using var owned = store;
        using var counted = metrics;
        var key = Guid.NewGuid().ToString("N");
        await store.WriteLeaseAsync(FillLeases.KeyOf(key), new FillLease("crashed", 1, -1, 0, 0), onlyIfAbsent: true, default);

        var claim = leases.ClaimAsync(key, null, default);
        await PollUntilDecidedAsync(claim, time);

        Assert.Equal(FillClaimKind.Alone, (await claim).Kind);
        Assert.Equal(1, metrics.FillWaitsOf(FillWaitOutcome.Dead));
    }

    [Fact]
    public async Task A_lease_taken_over_by_another_live_fill_is_waited_for_not_fetched_around()
    {
        var (leases, store, metrics, time) = Leases();
        using var owned = store;
        using var counted = metrics;
        var key = Guid.NewGuid().ToString("N");
        var leaseKey = FillLeases.KeyOf(key);
        await store.WriteLeaseAsync(leaseKey, new FillLease("first", 1, -1, 0, 0), onlyIfAbsent: true, default);

        var claim = leases.ClaimAsync(key, null, default);
        // Two sidecars claimed at the same moment on a store that ignores If-None-Match and "second" won; it
        // renews its lease (3 s of the fake clock, within FILL_WAIT and the lease's lifetime).
        for (var sequence = 0; sequence < 12; sequence++)
        {
            await store.WriteLeaseAsync(leaseKey, new FillLease("second", sequence, -1, 0, 0), onlyIfAbsent: false, default);
            time.Advance(FillLeases.Poll);
            await Task.Delay(20); // lets the waiter read the lease; a slow read only makes the check weaker
            Assert.False(claim.IsCompleted, $"the wait ended after {sequence + 1} polls while the second fill was live");
        }

        // The second fill is done: its lease goes, and the waiter looks in the store.
        await store.DeleteAsync(leaseKey, default);
        await PollUntilDecidedAsync(claim, time);

        Assert.Equal(FillClaimKind.OtherEnded, (await claim).Kind);
        Assert.All(Enum.GetValues<FillWaitOutcome>(), outcome => Assert.Equal(0, metrics.FillWaitsOf(outcome)));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_miss_that_finds_a_lease_saying_stored_looks_in_the_store_again_without_waiting(bool conditionalWrites)
    {
        // Another sidecar committed the entry just after this miss's lookup found nothing: its lease says "stored".
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites);
        var (leases, store, metrics, time) = Leases(relay.Url);
        using var owned = store;
        using var counted = metrics;
        var key = Guid.NewGuid().ToString("N");
        var leaseKey = FillLeases.KeyOf(key);
        var stored = new FillLease("other", 7, 1L << 26, 1L << 26, 0, Stored: true);
        await store.WriteLeaseAsync(leaseKey, stored, onlyIfAbsent: false, default);
        Assert.Equal(stored, (await store.ReadLeaseAsync(leaseKey, default))?.Lease);

        // Decided at once (the fake clock never moves: a wait would never end), the lease left as it was.
        var claim = leases.ClaimAsync(key, null, default);
        Assert.Same(claim, await Task.WhenAny(claim, Task.Delay(TimeSpan.FromSeconds(30))));
        Assert.Equal(FillClaimKind.JustStored, (await claim).Kind);
        Assert.Equal(stored, (await store.ReadLeaseAsync(leaseKey, default))?.Lease);

        // A stored lease older than a lease's lifetime by the store's clock is left over (its removal failed): the miss fills.
        relay.LeaseReadsClockAhead = FillLeases.Lifetime + TimeSpan.FromSeconds(2);
        Assert.Equal(FillClaimKind.Holding, (await ClaimedAsync(leases, key)).Kind);
        await store.DeleteAsync(leaseKey, default);
    }

    [Fact]
    public async Task A_miss_of_an_entry_just_answered_not_storable_costs_no_lease_request()
    {
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (leases, store, metrics, time) = Leases(relay.Url);
        using var owned = store;
        using var counted = metrics;
        var key = Guid.NewGuid().ToString("N");
        var leaseRequests = () => relay.Requests.Count(r => r.Contains(FillLeases.KeyOf(key), StringComparison.Ordinal));

        leases.Answered(key, storable: false); // e.g. under the minimum size, or Cache-Control: private
        Assert.Equal(FillClaimKind.Alone, (await leases.ClaimAsync(key, null, default)).Kind);
        Assert.Equal(0, leaseRequests());

        // Remembered for a minute only: then misses take the lease again.
        time.Advance(FillLeases.RememberedFor);
        var claim = await ClaimedAsync(leases, key);
        Assert.Equal(FillClaimKind.Holding, claim.Kind);
        Assert.True(leaseRequests() > 0);
        await store.DeleteAsync(claim.LeaseKey!, default);

        // A storable answer ends it at once.
        leases.Answered(key, storable: false);
        leases.Answered(key, storable: true);
        Assert.Equal(FillClaimKind.Holding, (await ClaimedAsync(leases, key)).Kind);
        await store.DeleteAsync(FillLeases.KeyOf(key), default);
    }

    [Fact]
    public async Task A_lease_is_taken_only_when_none_is_held_and_removed_when_nothing_is_stored()
    {
        var (leases, store, metrics, _) = Leases();
        using var owned = store;
        using var counted = metrics;
        var key = Guid.NewGuid().ToString("N");

        var claim = await ClaimedAsync(leases, key);
        Assert.Equal(FillClaimKind.Holding, claim.Kind);
        Assert.Equal(FillLeases.KeyOf(key), claim.LeaseKey);
        Assert.NotNull(await store.ReadLeaseAsync(claim.LeaseKey!, default));

        // The origin's answer was not storable: the lease goes at once, so waiters fetch on their own.
        leases.Hold(claim.LeaseKey!, Task.FromResult<CacheFill?>(null));
        await Eventually.WaitUntilAsync(() => store.ReadLeaseAsync(claim.LeaseKey!, default).Result is null, what: "the lease removed");
        Assert.Equal(0, metrics.StoreErrors);
    }

    [Fact]
    public void Leases_are_off_with_a_zero_wait_and_a_bad_wait_is_refused_by_name()
    {
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_FILL_WAIT"] = "0";
        Assert.Equal(TimeSpan.Zero, CacheOptions.FromEnvironment(environment)!.FillWait);
        environment["SIDEKICK_CACHE_FILL_WAIT"] = "soon";
        var refused = Assert.Throws<Sidekick.Cli.UsageException>(() => CacheOptions.FromEnvironment(environment));
        Assert.Contains("SIDEKICK_CACHE_FILL_WAIT \"soon\"", refused.Message, StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(10), CacheOptions.FromEnvironment(fixture.Environment())!.FillWait);
    }

    /// <summary>
    /// A sidekick (Host minio.example:9000) whose first claim, made by a GET of an object the backend does not have
    /// (answered 404), already learned how the store treats If-None-Match.
    /// </summary>
    private async Task<(SidekickInstance Instance, HttpClient Client)> LearnedSidekickAsync(CacheTestBackend backend, StoreRelay relay, TextWriter? log = null)
    {
        var (sidekick, client) = await fixture.StartSidekickAsync([backend.Url], Integration.SidekickHarness.FastOptions with { Log = log is not null },
            fixture.Environment(relay.Url), log);
        client.DefaultRequestHeaders.Host = "minio.example:9000";
        var learn = $"/bucket/learn-{Guid.NewGuid():N}";
        using (var learned = await client.GetAsync(learn))
        {
            Assert.Equal("MISS", Outcome(learned));
        }

        // Its lease write and read-back run beside the origin request and may outlast the answer (a 404, not stored):
        // the test's own store hooks must not see them. The lease not stored is removed last.
        var leaseRemoved = $"DELETE /cache/{CacheFixture.ObjectName(FillLeases.KeyOf(CacheKey.For("minio.example:9000", learn)))}";
        await Eventually.WaitUntilAsync(() => relay.Requests.Contains(leaseRemoved),
            what: "the learning request's lease removed");
        return (sidekick, client);
    }

    /// <summary>
    /// A sidekick (Host minio.example:9000) that learned how the store treats If-None-Match on its own, once the store
    /// answered its first probe, before any request is made (and removed the probe object).
    /// </summary>
    private async Task<(SidekickInstance Instance, HttpClient Client)> StartedSidekickAsync(CacheTestBackend backend, StoreRelay relay)
    {
        var (sidekick, client) = await fixture.StartSidekickAsync(backend, fixture.Environment(relay.Url));
        client.DefaultRequestHeaders.Host = "minio.example:9000";
        await Eventually.WaitUntilAsync(() => sidekick.Server.Cache!.Leases.HonoursConditionalWrites is not null,
            what: $"the store's way learned at start; the store saw: {string.Join(", ", relay.Requests)}");
        Assert.Contains(relay.Requests, r => r.StartsWith("DELETE ", StringComparison.Ordinal) && r.Contains("sidekick-conditional-write-probe-", StringComparison.Ordinal));
        return (sidekick, client);
    }

    /// <summary>
    /// A sidekick in front of an object of <paramref name="size"/> bytes, whose store ignores If-None-Match (through a
    /// relay), with its claim's way learned; the next lease read-back of the object finds another sidecar's write.
    /// </summary>
    private async Task<LeaseRace> LeaseRaceAsync(string name, int size)
    {
        var backend = await CacheTestBackend.StartAsync();
        var path = $"/bucket/{name}-{Guid.NewGuid():N}.bin";
        var item = backend.Put(path, size);
        var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var log = new StringWriter();
        var (sidekick, client) = await LearnedSidekickAsync(backend, relay, TextWriter.Synchronized(log));
        var direct = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        var race = new LeaseRace(backend, relay, sidekick, client, direct, path, item, FillLeases.KeyOf(CacheKey.For("minio.example:9000", path)), log);
        relay.BeforeNextLeaseReadBack = () => direct.WriteLeaseAsync(race.LeaseKey, new FillLease("other", 1, -1, 0, 0), onlyIfAbsent: false, default);
        return race;
    }

    private sealed record LeaseRace(
        CacheTestBackend Backend, StoreRelay Relay, SidekickInstance Sidekick, HttpClient Client, S3CacheStore Direct, string Path, OriginObject Item, string LeaseKey,
        StringWriter Log)
        : IAsyncDisposable
    {
        public CacheMetrics Metrics => Sidekick.Server.Cache!.Metrics;

        public async ValueTask DisposeAsync()
        {
            Direct.Dispose();
            await Sidekick.DisposeAsync();
            await Relay.DisposeAsync();
            await Backend.DisposeAsync();
        }
    }

    /// <summary>
    /// After a miss yielded to another sidecar's lease: that fill ends without an entry (its lease goes), and the miss
    /// fetches the object on its own; the first origin answer was left unread.
    /// </summary>
    private static async Task OtherFillEndsUnstoredAsync(
        Task<HttpResponseMessage> miss, S3CacheStore direct, string leaseKey, CacheTestBackend backend, string path, OriginObject item, CacheMetrics metrics)
    {
        await Eventually.WaitUntilAsync(() => backend.Arrivals.Count(a => a == $"GET {path}") == 1, what: "the first origin request");
        await direct.DeleteAsync(leaseKey, default);
        using var response = await miss;
        Assert.Equal("MISS", Outcome(response));
        Assert.Equal(item.Body, await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, metrics.FillWaitsOf(FillWaitOutcome.NotStored));
        Assert.Equal(0, metrics.FillRacesLost(fetchedTwice: true));
        Assert.Equal(2, backend.Arrivals.Count(a => a == $"GET {path}"));
    }

    /// <summary>
    /// A claim, once its lease write and read-back are done where they run beside the origin request (on a store that
    /// ignores If-None-Match): what a test reads or removes next is then the lease as that claim left it.
    /// </summary>
    private static async Task<FillClaim> ClaimedAsync(FillLeases leases, string key)
    {
        var claim = await leases.ClaimAsync(key, null, default);
        if (claim.ReadBack is { } readBack)
        {
            await readBack;
        }

        return claim;
    }

    /// <summary>Advances the fake clock a poll at a time until the claim is decided (a minute of fake time at most).</summary>
    private static async Task PollUntilDecidedAsync(Task<FillClaim> claim, FakeTimeProvider time)
    {
        while (!claim.IsCompleted && time.GetUtcNow() - DateTimeOffset.UtcNow < TimeSpan.FromMinutes(1))
        {
            time.Advance(FillLeases.Poll);
            await Task.Delay(5); // lets the lease read on s3rver answer; the outcome depends on the fake clock only
        }
    }

    private (FillLeases Leases, S3CacheStore Store, CacheMetrics Metrics, FakeTimeProvider Time) Leases(Uri? endpoint = null)
    {
        var options = CacheOptions.FromEnvironment(fixture.Environment(endpoint))!;
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var store = new S3CacheStore(options);
        var metrics = new CacheMetrics();
        return (new FillLeases(options, store, metrics, time), store, metrics, time);
    }
}
