using System.Net;
using System.Text.Json;

namespace Sidekick.Tests.Caching;

/// <summary>
/// /v1/state's cache object shows what the fills are doing: the store's health, the fills in flight, the spool
/// space they hold of the budget, and the fills given up by reason, during a fill and after it.
/// </summary>
public sealed class CacheStateTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private static readonly string[] Reasons = ["spool_full", "spool_error", "store_error", "origin_incomplete", "client_gone", "ranges_incomplete", "object_changed", "client_too_slow"];

    [Fact]
    public async Task A_spool_budget_larger_than_the_disks_free_space_is_said_once_at_start()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var directory = Path.Combine(Path.GetTempPath(), $"sidekick-spool-{Guid.NewGuid():N}");
        var budget = new DriveInfo(Path.GetTempPath()).AvailableFreeSpace + (1L << 40);
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_DIR"] = directory;
        environment["SIDEKICK_CACHE_SPOOL_SIZE"] = budget.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var stderr = new StringWriter();
        var (instance, _) = await fixture.StartSidekickAsync([backend.Url], Sidekick.Tests.Integration.SidekickHarness.FastOptions, environment, stderr: stderr);
        await using var running = instance;

        var line = Assert.Single(stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains($"cache spool '{directory}' has ", line, StringComparison.Ordinal);
        Assert.Contains($"less than SIDEKICK_CACHE_SPOOL_SIZE ({budget})", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_state_shows_a_fill_in_flight_its_spool_and_then_nothing_held()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        var item = backend.Put("/bucket/paced.bin", 4 * 1024 * 1024);
        backend.ChunkDelayMs = 40; // about 2.6 s for the body: /v1/state is read while it streams
        var (instance, client) = await fixture.StartSidekickAsync(backend);
        await using var running = instance;

        var idle = await StateAsync(client);
        Assert.True(idle.GetProperty("healthy").GetBoolean());
        Assert.Equal(0, idle.GetProperty("fillsInFlight").GetInt32());
        Assert.Equal(0, idle.GetProperty("spoolBytes").GetInt64());
        Assert.Equal(5L * 1024 * 1024 * 1024, idle.GetProperty("spoolCapacityBytes").GetInt64()); // the default budget: MAX_SIZE, at least 4 GiB
        Assert.True(idle.GetProperty("spoolDiskFreeBytes").GetInt64() > 0); // before the first fill made the directory, too
        Assert.Equal(Reasons, idle.GetProperty("fillsAbandoned").EnumerateObject().Select(p => p.Name));
        Assert.All(idle.GetProperty("fillsAbandoned").EnumerateObject(), p => Assert.Equal(0, p.Value.GetInt64()));

        using var response = await client.GetAsync("/bucket/paced.bin", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = response.Content.ReadAsByteArrayAsync();
        var during = await WaitForStateAsync(client, s => s.GetProperty("fillsInFlight").GetInt32() == 1, "the fill to start");
        Assert.False(body.IsCompleted, "the body had already ended: the state was not read during the fill");
        Assert.Equal(item.Body.Length, during.GetProperty("spoolBytes").GetInt64()); // the whole length, reserved first

        Assert.Equal(item.Body, await body);
        var after = await WaitForStateAsync(client, s => s.GetProperty("fillsInFlight").GetInt32() == 0 && s.GetProperty("spoolBytes").GetInt64() == 0,
            "the fill to end and its spool to be let go");
        Assert.All(after.GetProperty("fillsAbandoned").EnumerateObject(), p => Assert.Equal(0, p.Value.GetInt64()));
        Assert.Equal(1, instance.Server.Cache!.Metrics.FillsCompleted);
        Assert.True(after.GetProperty("healthy").GetBoolean());
    }

    [Fact]
    public async Task The_state_counts_abandoned_fills_by_reason()
    {
        await using var backend = await CacheTestBackend.StartAsync();
        // 16 MiB at 64 KiB per 20 ms: about 5 s, far more than the loopback socket buffers hold, so the client
        // leaves long before sidekick could have written the whole body.
        backend.Put("/bucket/left.bin", 16 * 1024 * 1024);
        backend.Put("/bucket/too-big.bin", 3 * 1024 * 1024);
        backend.ChunkDelayMs = 20;
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_SPOOL_SIZE"] = "18MiB";
        var (instance, client) = await fixture.StartSidekickAsync([backend.Url], Integration.SidekickHarness.FastOptions, environment);
        await using var running = instance;

        // A client that leaves after the first bytes: its fill is given up (client_gone) and its spool freed.
        using (var response = await client.GetAsync("/bucket/left.bin", HttpCompletionOption.ResponseHeadersRead))
        {
            await using var stream = await response.Content.ReadAsStreamAsync();
            Assert.True(await stream.ReadAsync(new byte[1024]) > 0);
            var during = await StateAsync(client);
            Assert.Equal(1, during.GetProperty("fillsInFlight").GetInt32());
            Assert.Equal(16 * 1024 * 1024, during.GetProperty("spoolBytes").GetInt64());
            Assert.Equal(18 * 1024 * 1024, during.GetProperty("spoolCapacityBytes").GetInt64());

            // Another fill while this one holds 16 of the 18 MiB: no room (spool_full), served all the same.
            using var other = await client.GetAsync("/bucket/too-big.bin");
            Assert.Equal(3 * 1024 * 1024, (await other.Content.ReadAsByteArrayAsync()).Length);
        }

        var after = await WaitForStateAsync(client, s => s.GetProperty("fillsAbandoned").GetProperty("client_gone").GetInt64() == 1
            && s.GetProperty("fillsInFlight").GetInt32() == 0 && s.GetProperty("spoolBytes").GetInt64() == 0, "the client's fill to be given up");
        var abandoned = after.GetProperty("fillsAbandoned");
        Assert.Equal(1, abandoned.GetProperty("spool_full").GetInt64());
        Assert.Equal(0, abandoned.GetProperty("store_error").GetInt64());
        Assert.Equal(0, abandoned.GetProperty("origin_incomplete").GetInt64());
        Assert.Equal(0, abandoned.GetProperty("spool_error").GetInt64());
    }

    private static async Task<JsonElement> StateAsync(HttpClient client)
    {
        using var document = JsonDocument.Parse(await client.GetStringAsync("/v1/state"));
        return document.RootElement.GetProperty("cache").Clone();
    }

    private static async Task<JsonElement> WaitForStateAsync(HttpClient client, Func<JsonElement, bool> condition, string what)
    {
        var deadline = Environment.TickCount64 + 60_000;
        while (true)
        {
            var state = await StateAsync(client);
            if (condition(state))
            {
                return state;
            }

            Assert.True(Environment.TickCount64 < deadline, $"timed out waiting for {what}: {state}");
            await Task.Delay(50);
        }
    }
}
