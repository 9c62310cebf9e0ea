using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using Sidekick.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Sidekick.Tests.Integration;

/// <summary>
/// Backends are killed and restarted while several clients read and write. Nothing acknowledged may be
/// lost and no GET may fail. The suite runs a short version; SIDEKICK_CHAOS_SECONDS makes it longer, and
/// SIDEKICK_CHAOS_AGAINST=haproxy runs the same scenario through HAProxy instead, printing its counts for
/// comparison without asserting (bench/chaos.sh).
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class ChaosTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Duration = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("SIDEKICK_CHAOS_SECONDS"), out var s) ? s : 12);

    [Fact]
    public Task Nodes_killed_one_at_a_time() => RunAsync(killWholeSite: false);

    [Fact]
    public Task Whole_first_site_killed() => RunAsync(killWholeSite: true);

    private async Task RunAsync(bool killWholeSite)
    {
        var store = new ConcurrentDictionary<string, byte[]>();
        var backends = new List<TestBackend>();
        for (var i = 0; i < 4; i++)
        {
            var backend = await TestBackend.StartAsync($"n{i}");
            backend.Store = store;
            backends.Add(backend);
        }

        var againstHaproxy = Environment.GetEnvironmentVariable("SIDEKICK_CHAOS_AGAINST") == "haproxy";
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMilliseconds(100) };
        await using var sidekick = againstHaproxy ? null : await SidekickHarness.StartAsync(options, [backends[0], backends[1]], [backends[2], backends[3]]);
        await using var haproxy = againstHaproxy ? await HaproxyProcess.StartAsync([backends[0], backends[1]], [backends[2], backends[3]]) : null;
        var client = sidekick?.Client ?? haproxy!.Client;
        var acknowledged = new ConcurrentDictionary<string, string>();
        var failedGets = 0;
        var failedPuts = 0;
        // Why the first reads failed: a rare failure must say what the client saw.
        var getFailures = new ConcurrentQueue<string>();
        var gets = 0;
        using var stop = new CancellationTokenSource(Duration);

        // Seed a few objects so readers have something to read from the start.
        for (var i = 0; i < 8; i++)
        {
            var body = RandomNumberGenerator.GetBytes(256 * 1024);
            (await client.PutAsync($"/obj/seed{i}", new ByteArrayContent(body))).EnsureSuccessStatusCode();
            acknowledged[$"/obj/seed{i}"] = Convert.ToHexString(SHA256.HashData(body));
        }

        async Task WriterAsync(int id)
        {
            for (var n = 0; !stop.IsCancellationRequested; n++)
            {
                var key = $"/obj/w{id}-{n}";
                var body = RandomNumberGenerator.GetBytes(64 * 1024 + n);
                try
                {
                    using var response = await client.PutAsync(key, new ByteArrayContent(body));
                    if (response.StatusCode == HttpStatusCode.OK)
                    {
                        acknowledged[key] = Convert.ToHexString(SHA256.HashData(body));
                    }
                    else
                    {
                        Interlocked.Increment(ref failedPuts);
                    }
                }
                catch (HttpRequestException)
                {
                    Interlocked.Increment(ref failedPuts);
                }
            }
        }

        async Task ReaderAsync()
        {
            while (!stop.IsCancellationRequested)
            {
                var keys = acknowledged.Keys.ToArray();
                var key = keys[Random.Shared.Next(keys.Length)];
                Interlocked.Increment(ref gets);
                try
                {
                    var body = await client.GetByteArrayAsync(key);
                    if (Convert.ToHexString(SHA256.HashData(body)) != acknowledged[key])
                    {
                        Interlocked.Increment(ref failedGets);
                        getFailures.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} GET {key}: {body.Length} bytes that differ from what was written");
                    }
                }
                catch (HttpRequestException ex)
                {
                    Interlocked.Increment(ref failedGets);
                    getFailures.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} GET {key}: {ex.StatusCode?.ToString() ?? "no status"}: {ex.Message} {ex.InnerException?.Message}");
                }
            }
        }

        var chaosLog = new ConcurrentQueue<string>();

        async Task ChaosAsync()
        {
            var kills = 0;
            while (!stop.IsCancellationRequested)
            {
                var victims = killWholeSite ? backends.Take(2).ToList() : [backends[Random.Shared.Next(backends.Count)]];
                foreach (var victim in victims)
                {
                    await victim.KillAsync();
                    kills++;
                    chaosLog.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} killed {victim.Name}");
                }

                await Task.Delay(700);
                foreach (var victim in victims)
                {
                    await victim.RestartAsync();
                    chaosLog.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} restarted {victim.Name}");
                }

                await Task.Delay(900);
            }

            output.WriteLine($"kills: {kills}");
        }

        var work = new List<Task> { ChaosAsync() };
        work.AddRange(Enumerable.Range(0, 3).Select(WriterAsync));
        work.AddRange(Enumerable.Range(0, 4).Select(_ => ReaderAsync()));
        await Task.WhenAll(work);

        // Every acknowledged write is readable, byte for byte.
        var lost = 0;
        foreach (var (key, hash) in acknowledged)
        {
            try
            {
                var body = await client.GetByteArrayAsync(key);
                lost += Convert.ToHexString(SHA256.HashData(body)) == hash ? 0 : 1;
            }
            catch (HttpRequestException)
            {
                lost++;
            }
        }

        output.WriteLine($"{(againstHaproxy ? "haproxy" : "sidekick")} ({Duration.TotalSeconds} s, {(killWholeSite ? "whole site" : "one node")} killed): " +
                         $"gets: {gets}, failed gets: {failedGets}, acknowledged puts: {acknowledged.Count}, failed puts: {failedPuts}, " +
                         $"lost: {lost}, retries: {(sidekick is null ? "-" : sidekick.Server.Retries.Count.Value)}");
        foreach (var failure in getFailures.Take(10))
        {
            output.WriteLine(failure);
        }

        if (!getFailures.IsEmpty)
        {
            output.WriteLine("chaos: " + string.Join("; ", chaosLog.TakeLast(12)));
        }

        foreach (var backend in backends)
        {
            await backend.DisposeAsync();
        }

        if (againstHaproxy)
        {
            return; // a comparison run: the counts above are the result
        }

        Assert.True(failedGets == 0, $"{failedGets} failed GETs; first: {(getFailures.TryPeek(out var first) ? first : "-")}");
        Assert.Equal(0, lost);
        Assert.True(gets > 100, $"only {gets} GETs ran");
    }
}
