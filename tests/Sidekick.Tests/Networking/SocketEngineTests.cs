using Sidekick.Hosting;
using Sidekick.Networking;
using Sidekick.Tests.Integration;
using Sidekick.Topology;

namespace Sidekick.Tests.Networking;

/// <summary>
/// Which socket engine carries the traffic. The forwarding suites run on the default (sidekick's event
/// loops); scripts/test.sh runs them once more on the .NET engine (SIDEKICK_IO=dotnet).
/// </summary>
public sealed class SocketEngineTests
{
    [Fact]
    public async Task Clients_are_served_by_the_event_loops_unless_the_dotnet_engine_is_chosen()
    {
        await using var backend = await TestBackend.StartAsync("a");
        await using (var loops = await StartAsync("epoll", backend.Url))
        {
            Assert.Equal("a", await loops.Client.GetStringAsync("/one"));
            Assert.Equal("a", await loops.Client.GetStringAsync("/two"));
            Assert.Equal(1, loops.Server.EventLoopConnections);
            Assert.Equal(2, loops.Server.FastPathRequests);
        }

        await using var dotnet = await StartAsync("dotnet", backend.Url);
        Assert.Equal("a", await dotnet.Client.GetStringAsync("/three"));
        Assert.Equal(0, dotnet.Server.EventLoopConnections);
        Assert.Equal(1, dotnet.Server.FastPathRequests);
    }

    [Theory]
    [InlineData(null, true)]
    [InlineData("epoll", true)]
    [InlineData(" DotNet ", false)]
    public void The_io_variable_picks_the_engine(string? value, bool loops) =>
        Assert.Equal(loops, EventLoops.Chosen(value));

    [Fact]
    public void An_unknown_engine_is_refused_in_one_line_naming_it()
    {
        var error = Assert.Throws<Sidekick.Cli.FatalException>(() => EventLoops.Chosen("io_uring"));
        Assert.Equal("invalid SIDEKICK_IO 'io_uring': expected 'epoll' (the default on Linux) or 'dotnet'", error.Message);
    }

    [Theory]
    [InlineData("1", 1)]
    [InlineData(" 3 ", 3)]
    public void The_threads_variable_sets_the_number_of_loops(string value, int threads) =>
        Assert.Equal(threads, EventLoops.Threads(value));

    [Fact]
    public void By_default_the_loops_take_half_the_cores()
    {
        Assert.Equal(Math.Max(1, Environment.ProcessorCount / 2), EventLoops.Threads(null));
        Assert.Equal(Math.Max(1, Environment.ProcessorCount / 2), EventLoops.Threads(""));
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-2")]
    [InlineData("two")]
    [InlineData("1025")]
    public void A_thread_count_out_of_range_is_refused_in_one_line_naming_it(string value)
    {
        var error = Assert.Throws<Sidekick.Cli.FatalException>(() => EventLoops.Threads(value));
        Assert.Equal($"invalid SIDEKICK_IO_THREADS '{value}': expected a number of threads from 1 to 1024", error.Message);
    }

    private static Task<SidekickHarness> StartAsync(string io, Uri backend)
    {
        var options = SidekickHarness.FastOptions;
        var url = backend.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(backend, url, new Uri(url + options.HealthPath))])];
        return SidekickHarness.StartAsync(options, sites, new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_IO", io), ("SIDEKICK_FORWARDER", "http1")) });
    }
}
