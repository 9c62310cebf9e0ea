using System.Runtime.CompilerServices;
using Sidekick.Cli;
using Sidekick.Hosting;
using Sidekick.Topology;

namespace Sidekick.Tests.Integration;

/// <summary>Runs a real sidekick in-process on a free loopback port in front of test backends.</summary>
internal sealed class SidekickHarness : IAsyncDisposable
{
    private SidekickHarness(SidekickServer server, HttpClient client)
    {
        Server = server;
        Client = client;
    }

    public SidekickServer Server { get; }

    public HttpClient Client { get; }

    public Uri BaseAddress => Server.BaseAddress;

    public static SidekickOptions FastOptions => new()
    {
        Address = "127.0.0.1:0",
        HealthPath = "/health",
        ReadHealthPath = "/health",
        HealthDuration = TimeSpan.FromMilliseconds(200),
        HealthTimeout = TimeSpan.FromSeconds(2),
        ShutdownTimeout = TimeSpan.FromSeconds(10),
        Trace = "",
    };

    /// <summary>Environment variables for <see cref="SidekickSeams.Environment"/>; a null value leaves the process's.</summary>
    public static IReadOnlyDictionary<string, string?> Variables(params (string Name, string? Value)[] variables) =>
        variables.Where(v => v.Value is not null).ToDictionary(v => v.Name, v => v.Value);

    public static Task<SidekickHarness> StartAsync(params TestBackend[][] sites) => StartAsync(FastOptions, sites);

    public static Task<SidekickHarness> StartAsync(SidekickOptions options, params TestBackend[][] sites) =>
        StartAsync(options, Definitions(options, sites), hooks: null, expectedUp: b => IsHealthy(b, sites));

    /// <summary>Starts in front of any backends; waits until those expected up (all by default) are up.</summary>
    public static async Task<SidekickHarness> StartAsync(
        SidekickOptions options, IReadOnlyList<SiteDefinition> definitions, SidekickSeams? hooks, Func<Backend, bool>? expectedUp = null, ServerParts? parts = null)
    {
        var server = SidekickServer.Create(options, () => definitions, hooks, parts);
        await server.StartAsync();
        var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false })
        {
            BaseAddress = server.BaseAddress,
            Timeout = TimeSpan.FromMinutes(2),
        };
        var harness = new SidekickHarness(server, client);
        await harness.WaitUntilAsync(() => server.Topology.Current.AllBackends.All(b => b.IsUp || !(expectedUp?.Invoke(b) ?? true)));
        return harness;
    }

    public static IReadOnlyList<SiteDefinition> Definitions(SidekickOptions options, TestBackend[][] sites) =>
        sites.Select((backends, i) => new SiteDefinition(i + 1, backends.Select((b, j) =>
        {
            var url = b.Url.ToString().TrimEnd('/');
            var path = i == sites.Length - 1 ? options.ReadHealthPath : options.HealthPath;
            var copy = backends.Take(j + 1).Count(other => other == b); // numbered as SiteParser numbers an endpoint listed twice
            return new BackendDefinition(b.Url, url, new Uri(url + path), Copy: copy);
        }).ToArray())).ToArray();

    public Backend BackendOf(TestBackend backend) =>
        Server.Topology.Current.AllBackends.Single(b => b.Definition.Endpoint.Port == backend.Port);

    public Task WaitUntilAsync(Func<bool> condition, int timeoutMs = 15000, [CallerArgumentExpression(nameof(condition))] string? what = null) =>
        Eventually.WaitUntilAsync(condition, timeoutMs, what);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Server.StopAsync();
        await Server.DisposeAsync();
    }

    private static bool IsHealthy(Backend backend, TestBackend[][] sites) =>
        sites.SelectMany(s => s).Any(t => t.Port == backend.Definition.Endpoint.Port && t.Healthy);
}
