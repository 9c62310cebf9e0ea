using System.Net;

namespace Sidekick.Tests.Integration;

/// <summary>
/// How a download resume fails: a resuming backend whose body breaks too is a broken response (not a backend
/// down).
/// </summary>
public sealed class ResumeFailureTests
{
    private const int Size = 1024 * 1024;

    [Fact]
    public async Task A_body_that_breaks_on_every_backend_marks_none_of_them_down()
    {
        // The object is broken, not the backends: each resume attempt is one broken response, which takes a
        // run of them (from different requests) to mark a backend down. It was a transport failure, down at once.
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        await using var c = await TestBackend.StartAsync("c");
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a, b, c]);
        // Every mark-down, even one a probe undoes a moment later (a passive mark-down wakes the probe loop).
        var markedDown = new System.Collections.Concurrent.ConcurrentQueue<string>();
        foreach (var backend in sidekick.Server.Topology.Current.AllBackends)
        {
            backend.StateChanged += (down, transition) =>
            {
                if (!transition.IsUp)
                {
                    markedDown.Enqueue($"{down.Name}: {transition.Reason}");
                }
            };
        }

        using var response = await sidekick.Client.GetAsync($"/download/{Size}?dieAt={Size / 8}", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var body = await response.Content.ReadAsStreamAsync();
        await Assert.ThrowsAnyAsync<IOException>(() => body.CopyToAsync(Stream.Null));

        // Resumed (and broken) on the other backends; none of the three is down for it.
        Assert.Contains(new[] { a, b, c }.SelectMany(t => t.Seen), r => r.Headers.ContainsKey("Range"));
        var metrics = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains("sidekick_download_resumes_total{outcome=\"failed\"} 1", metrics, StringComparison.Ordinal);
        Assert.Empty(markedDown);
        Assert.All(new[] { a, b, c }, backend => Assert.True(sidekick.BackendOf(backend).IsUp));
    }
}
