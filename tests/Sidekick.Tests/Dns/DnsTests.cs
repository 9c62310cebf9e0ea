using System.Collections.Concurrent;
using System.Net;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;
using Sidekick.Topology;
using Sidekick.Topology.Dns;

namespace Sidekick.Tests.Dns;

/// <summary>A resolver fed by the test: names map to whatever the test says, and lookups are counted.</summary>
internal sealed class FakeResolver : IHostResolver
{
    public ConcurrentDictionary<string, IPAddress[]> Records { get; } = new(StringComparer.OrdinalIgnoreCase);

    public int Lookups;

    public async Task<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref Lookups);
        await Task.Delay(50, cancellationToken); // long enough for concurrent callers to overlap
        return Records.TryGetValue(host, out var addresses) ? addresses : throw new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.HostNotFound);
    }
}

public sealed class DnsTests
{
    [Fact]
    public async Task Concurrent_lookups_share_one_query_and_a_failure_answers_for_a_second_only()
    {
        var resolver = new FakeResolver();
        resolver.Records["minio1"] = [IPAddress.Loopback];
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        using var cache = new DnsCache(resolver, TimeSpan.FromHours(1), time);
        var answers = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => cache.ResolveAsync("minio1", CancellationToken.None).AsTask()));
        Assert.All(answers, a => Assert.Equal(IPAddress.Loopback, Assert.Single(a)));
        Assert.Equal(1, resolver.Lookups);

        // A name that does not resolve: every probe of its backend (every 100 ms at first) asked again, each lookup
        // holding a thread-pool thread in getaddrinfo. Within a second the failure answers.
        await Assert.ThrowsAnyAsync<System.Net.Sockets.SocketException>(() => cache.ResolveAsync("later", CancellationToken.None).AsTask());
        resolver.Records["later"] = [IPAddress.Loopback];
        time.Advance(DnsCache.FailureHeld - TimeSpan.FromMilliseconds(1));
        await Assert.ThrowsAnyAsync<System.Net.Sockets.SocketException>(() => cache.ResolveAsync("later", CancellationToken.None).AsTask());
        Assert.Equal(2, resolver.Lookups);

        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Single(await cache.ResolveAsync("later", CancellationToken.None));
        Assert.Equal(3, resolver.Lookups);
    }

    [Fact]
    public async Task Refresh_follows_changes_keeps_answers_on_failure_and_drops_unused_names()
    {
        var resolver = new FakeResolver();
        resolver.Records["svc"] = [IPAddress.Parse("127.0.0.2")];
        using var cache = new DnsCache(resolver, TimeSpan.FromHours(1), TimeProvider.System);
        await cache.ResolveAsync("svc", CancellationToken.None);

        resolver.Records["svc"] = [IPAddress.Parse("127.0.0.3")];
        await cache.RefreshAsync();
        Assert.Equal(IPAddress.Parse("127.0.0.3"), (await cache.ResolveAsync("svc", CancellationToken.None))[0]);

        resolver.Records.TryRemove("svc", out _);
        await cache.RefreshAsync(); // fails: the old answer stays
        Assert.Equal(IPAddress.Parse("127.0.0.3"), (await cache.ResolveAsync("svc", CancellationToken.None))[0]);

        await cache.RefreshAsync(); // used since last refresh: kept
        await cache.RefreshAsync(); // unused since: dropped
        Assert.Empty(cache.Names);
    }

    [Fact]
    public async Task A_name_dropped_while_unused_gets_its_last_answer_when_the_lookup_fails_again()
    {
        // A name is dropped after a refresh period without a new connection (its pooled ones served), and asked again
        // for the next one: if the resolver is down then (or sidekick out of descriptors), the error was a connect
        // failure that marked the backend down at once.
        var resolver = new FakeResolver();
        resolver.Records["svc"] = [IPAddress.Parse("127.0.0.2")];
        using var cache = new DnsCache(resolver, TimeSpan.FromHours(1), TimeProvider.System);
        await cache.ResolveAsync("svc", CancellationToken.None);
        await cache.RefreshAsync(); // used: refreshed
        await cache.RefreshAsync(); // unused since: dropped
        Assert.Empty(cache.Names);

        resolver.Records.TryRemove("svc", out _);
        var lookups = resolver.Lookups;
        Assert.Equal(IPAddress.Parse("127.0.0.2"), Assert.Single(await cache.ResolveAsync("svc", CancellationToken.None)));
        Assert.Equal(lookups + 1, resolver.Lookups);
        // Kept until the next refresh, which asks again: connections meanwhile do not each wait for a failing resolver.
        Assert.Equal(IPAddress.Parse("127.0.0.2"), Assert.Single(await cache.ResolveAsync("svc", CancellationToken.None)));
        Assert.Equal(lookups + 1, resolver.Lookups);
        resolver.Records["svc"] = [IPAddress.Parse("127.0.0.4")];
        await cache.RefreshAsync();
        Assert.Equal(IPAddress.Parse("127.0.0.4"), Assert.Single(await cache.ResolveAsync("svc", CancellationToken.None)));

        // A name that never resolved still fails.
        await Assert.ThrowsAnyAsync<System.Net.Sockets.SocketException>(() => cache.ResolveAsync("never", CancellationToken.None).AsTask());
    }

    [Fact]
    public async Task Round_robin_dns_adds_and_removes_backends_and_keeps_the_others()
    {
        await using var a = await TestBackend.StartAsync("a");
        var resolver = new FakeResolver();
        resolver.Records["pool.test"] = [IPAddress.Parse("127.0.0.1")];
        var port = Sidekick.Tests.Infrastructure.SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with
        {
            Address = $"127.0.0.1:{port}",
            RoundRobinDns = true,
            DnsTtl = TimeSpan.FromMilliseconds(300),
            Sites = [$"http://pool.test:{a.Port}"],
        };
        await using var instance = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null, Resolver = resolver });
        await instance.Server.StartAsync();
        Backend Only() => Assert.Single(instance.Server.Topology.Current.AllBackends);
        await WaitAsync(() => Only().IsUp);
        var first = Only();
        Assert.Equal($"http://127.0.0.1:{a.Port}", first.Name);

        resolver.Records["pool.test"] = [IPAddress.Parse("127.0.0.1"), IPAddress.Parse("::1")];
        await WaitAsync(() => instance.Server.Topology.Current.AllBackends.Count() == 2);
        Assert.Contains(instance.Server.Topology.Current.AllBackends, b => b.Name == $"http://[::1]:{a.Port}");
        Assert.Same(first, instance.Server.Topology.Current.AllBackends.First(b => b.Name == first.Name));

        resolver.Records["pool.test"] = [IPAddress.Parse("::1")];
        await WaitAsync(() => instance.Server.Topology.Current.AllBackends.Count() == 1 && Only().Name.Contains("[::1]", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Round_robin_dns_copies_the_probe_credentials_to_every_address()
    {
        var resolver = new FakeResolver();
        resolver.Records["pool.test"] = [IPAddress.Parse("127.0.0.1"), IPAddress.Parse("::1")];
        var site = SiteParser.Parse(["http://u:hunter2@pool.test:9000"], "sidekick", "/health", "/health", 0)[0];
        var expanded = await RoundRobinDns.ExpandAsync(site, resolver, _ => { });
        Assert.Equal(["http://127.0.0.1:9000", "http://[::1]:9000"], expanded.Backends.Select(b => b.EndpointText));
        Assert.Equal(["http://127.0.0.1:9000/health", "http://[::1]:9000/health"], expanded.Backends.Select(b => b.ProbeUri.ToString()));
        Assert.All(expanded.Backends, b =>
        {
            Assert.Equal("hunter2", b.ProbeCredentials!.Password);
            Assert.Equal("", b.Endpoint.UserInfo);
        });
    }

    [Fact]
    public async Task A_name_that_does_not_resolve_at_start_is_retried()
    {
        await using var a = await TestBackend.StartAsync("a");
        var resolver = new FakeResolver();
        var port = Sidekick.Tests.Infrastructure.SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with
        {
            Address = $"127.0.0.1:{port}",
            RoundRobinDns = true,
            DnsTtl = TimeSpan.FromMilliseconds(300),
            Sites = [$"http://late.test:{a.Port}"],
        };
        await using var instance = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null, Resolver = resolver });
        await instance.Server.StartAsync();
        Assert.Empty(instance.Server.Topology.Current.AllBackends);
        resolver.Records["late.test"] = [IPAddress.Loopback];
        await WaitAsync(() => instance.Server.Topology.Current.AllBackends.Any(b => b.IsUp));
    }

    private static async Task WaitAsync(Func<bool> condition)
    {
        var deadline = Environment.TickCount64 + 15000;
        while (!condition())
        {
            Assert.True(Environment.TickCount64 < deadline, "timed out");
            await Task.Delay(25);
        }
    }
}
