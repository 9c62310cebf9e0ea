using System.Net;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Health;

public sealed class OutlierDetectionTests
{
    [Fact]
    public async Task A_backend_answering_503_in_a_row_is_ejected_and_traffic_goes_elsewhere()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        await using var c = await TestBackend.StartAsync("c");
        a.FailWith = 503;
        var options = SidekickHarness.FastOptions with { OutlierConsecutiveErrors = 3, OutlierEjectionTime = TimeSpan.FromMinutes(1) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a, b, c]);

        for (var i = 0; i < 40; i++)
        {
            using var _ = await sidekick.Client.GetAsync("/x");
        }

        Assert.True(sidekick.BackendOf(a).IsEjected);
        var before = a.Hits;
        for (var i = 0; i < 20; i++)
        {
            using var response = await sidekick.Client.GetAsync("/x");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        Assert.Equal(before, a.Hits);
    }

    [Fact]
    public async Task Cluster_wide_throttling_never_ejects_more_than_the_allowed_share()
    {
        var backends = new[] { await TestBackend.StartAsync("a"), await TestBackend.StartAsync("b"), await TestBackend.StartAsync("c"), await TestBackend.StartAsync("d") };
        try
        {
            foreach (var backend in backends)
            {
                backend.FailWith = 503;
            }

            var options = SidekickHarness.FastOptions with { OutlierConsecutiveErrors = 2, OutlierMaxEjectionPercent = 50 };
            await using var sidekick = await SidekickHarness.StartAsync(options, [.. backends]);
            for (var i = 0; i < 80; i++)
            {
                using var response = await sidekick.Client.GetAsync("/x");
                // Throttling answers reach the client unchanged; the site is never emptied.
                Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            }

            Assert.Equal(2, sidekick.Server.Topology.Current.AllBackends.Count(b => b.IsEjected));
        }
        finally
        {
            foreach (var backend in backends)
            {
                await backend.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task A_recovered_site_waits_for_the_hold_down_before_it_takes_traffic_back()
    {
        // The hold-down's timing is Topology/BackendTimingTests' (on a fake clock); this is the wiring.
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        var options = SidekickHarness.FastOptions with { FailbackHoldDown = TimeSpan.FromMinutes(10) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a], [b]);
        Assert.Equal("a", await sidekick.Client.GetStringAsync("/x"));

        a.Healthy = false;
        await sidekick.WaitUntilAsync(() => !sidekick.BackendOf(a).IsUp);
        a.Healthy = true;
        await sidekick.WaitUntilAsync(() => sidekick.BackendOf(a).IsUp);
        Assert.Equal("b", await sidekick.Client.GetStringAsync("/x"));
    }

    [Fact]
    public async Task A_recovered_backend_warms_up_instead_of_taking_a_full_share_at_once()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        var options = SidekickHarness.FastOptions with { SlowStart = TimeSpan.FromSeconds(30) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a, b]);
        a.Healthy = false;
        await sidekick.WaitUntilAsync(() => !sidekick.BackendOf(a).IsUp);
        a.Healthy = true;
        await sidekick.WaitUntilAsync(() => sidekick.BackendOf(a).IsUp);

        // Eight requests at a time: a backend at the start of its warm-up looks many times busier than it is.
        var before = a.Hits;
        for (var round = 0; round < 10; round++)
        {
            await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => sidekick.Client.GetStringAsync("/slow?ms=20")));
        }

        var warmed = a.Hits - before;
        Assert.True(warmed < 20, $"the recovering backend took {warmed} of 80 requests");
    }
}
