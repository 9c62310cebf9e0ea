using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Hosting;
using Sidekick.Observability;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Observability;

/// <summary>
/// /debug/events runs one capture at a time in the whole process: EventListeners created and disposed on several
/// threads at once deadlock inside the runtime. The clock is a <see cref="FakeTimeProvider"/>, so the first capture
/// runs until the test moves it, and the second request arrives while it certainly runs.
/// </summary>
public sealed class DiagnosticsEventsTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_second_concurrent_capture_is_refused_with_429_while_the_first_completes(bool adminListener)
    {
        await using var a = await TestBackend.StartAsync("a");
        var pprof = SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with { Pprof = $"127.0.0.1:{pprof}", AdminAddress = adminListener ? "127.0.0.1:0" : null };
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var sidekick = await SidekickHarness.StartAsync(options, SidekickHarness.Definitions(options, [[a]]), new SidekickSeams { Time = time });
        using var client = new HttpClient { BaseAddress = sidekick.Server.AdminAddress ?? new Uri($"http://127.0.0.1:{pprof}") };

        var first = client.GetAsync("/debug/events?seconds=2");
        await Eventually.WaitUntilAsync(() => DiagnosticsEndpoints.Capturing);

        // Without the gate this one would start a listener of its own (and wait on the stopped clock).
        using (var second = await client.GetAsync("/debug/events?seconds=1").WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(2), second.Headers.RetryAfter?.Delta);
            Assert.Equal("a /debug/events capture is already running: one at a time, try again when it ends\n", await second.Content.ReadAsStringAsync());
        }

        // The first one's wait ends when its clock has moved its two seconds.
        await Eventually.WaitUntilAsync(() =>
        {
            time.Advance(TimeSpan.FromSeconds(1));
            return first.IsCompleted;
        });

        using var done = await first;
        Assert.Equal(HttpStatusCode.OK, done.StatusCode);
        Assert.Equal(2, JsonDocument.Parse(await done.Content.ReadAsStringAsync()).RootElement.GetProperty("seconds").GetInt32());
        Assert.False(DiagnosticsEndpoints.Capturing);
    }
}
