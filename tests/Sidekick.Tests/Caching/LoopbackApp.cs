using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace Sidekick.Tests.Caching;

/// <summary>A Kestrel app on a free loopback port, no logging, no request body limit: the tests' origins and stores.</summary>
internal static class LoopbackApp
{
    /// <summary>Starts <paramref name="handler"/>; the handler may refer to what is built from the result (set before any request).</summary>
    public static async Task<(WebApplication App, int Port)> StartAsync(RequestDelegate handler)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Listen(IPAddress.Loopback, 0);
        });
        var app = builder.Build();
        app.Run(handler);
        await app.StartAsync();
        return (app, new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port);
    }
}
