using System.Net;

namespace Sidekick.Demo;

/// <summary>A tiny HTTP server on loopback that answers with its name and a readiness endpoint.</summary>
internal sealed class DemoBackend(string name, int port) : IAsyncDisposable
{
    private WebApplication? _app;

    public string Name { get; } = name;

    public int Port { get; } = port;

    public bool Running => _app is not null;

    public async Task StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, Port));
        var app = builder.Build();
        app.Run(context => context.Request.Path == "/health"
            ? Task.CompletedTask
            : context.Response.WriteAsync(Name));
        await app.StartAsync();
        _app = app;
    }

    public async Task StopAsync()
    {
        if (_app is { } app)
        {
            _app = null;
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    public ValueTask DisposeAsync() => new(StopAsync());
}
