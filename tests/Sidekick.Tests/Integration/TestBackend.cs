using System.Collections.Concurrent;
using System.Net;
using System.Net.WebSockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Sidekick.Tests.Integration;

/// <summary>What a test backend saw of one request.</summary>
internal sealed record SeenRequest(string Method, string RawTarget, IReadOnlyDictionary<string, string> Headers);

/// <summary>
/// A real Kestrel backend on loopback with the routes the proxy tests need. It can be stopped and started
/// again on the same port to simulate a node going away and coming back.
/// </summary>
internal sealed class TestBackend : IAsyncDisposable
{
    private WebApplication? _app;

    private TestBackend(string name) => Name = name;

    public string Name { get; }

    public int Port { get; private set; }

    public Uri Url => new($"http://127.0.0.1:{Port}");

    /// <summary>What /health answers: 200 when true, 503 otherwise.</summary>
    public bool Healthy { get; set; } = true;

    /// <summary>When set, downloads break the connection after this many body bytes (a crashing node).</summary>
    public long? DieAfterBytes { get; set; }

    /// <summary>Changes the ETag of downloads, as if the object had been overwritten.</summary>
    public string Version { get; set; } = "v1";

    /// <summary>When set, every non-health request is answered with this status (e.g. 503 SlowDown).</summary>
    public int? FailWith { get; set; }

    public ConcurrentQueue<SeenRequest> Seen { get; } = new();

    public int Hits => Seen.Count(r => !r.RawTarget.StartsWith("/health", StringComparison.Ordinal));

    public static async Task<TestBackend> StartAsync(string name, int port = 0)
    {
        var backend = new TestBackend(name);
        await backend.StartOnAsync(port);
        return backend;
    }

    public Task RestartAsync() => StartOnAsync(Port);

    public async Task StopAsync()
    {
        if (_app is { } app)
        {
            _app = null;
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    /// <summary>Stops at once, cutting every open connection (like kill -9 for the clients' point of view).</summary>
    public async Task KillAsync()
    {
        if (_app is { } app)
        {
            _app = null;
            using var now = new CancellationTokenSource();
            await now.CancelAsync();
            await app.StopAsync(now.Token);
            await app.DisposeAsync();
        }
    }

    /// <summary>Objects shared by every backend of one test, as a replicated object store would.</summary>
    public ConcurrentDictionary<string, byte[]>? Store { get; set; }

    public ValueTask DisposeAsync() => new(StopAsync());

    /// <summary>Deterministic content for downloads, so a hash can be computed without storing the body.</summary>
    public static byte Pattern(long offset) => (byte)((offset * 31 + 7) % 251);

    public static string PatternSha256(long length)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        for (long done = 0; done < length;)
        {
            var n = (int)Math.Min(buffer.Length, length - done);
            for (var i = 0; i < n; i++)
            {
                buffer[i] = Pattern(done + i);
            }

            hash.AppendData(buffer, 0, n);
            done += n;
        }

        return Convert.ToHexString(hash.GetHashAndReset());
    }

    private async Task StartOnAsync(int port)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Listen(IPAddress.Loopback, port);
        });
        var app = builder.Build();
        app.UseWebSockets();
        app.Run(HandleAsync);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Port = new Uri(address).Port;
        _app = app;
    }

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var rawTarget = context.Features.Get<IHttpRequestFeature>()!.RawTarget;
        Seen.Enqueue(new SeenRequest(request.Method, rawTarget,
            request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase)));
        context.Response.Headers["X-Backend"] = Name;
        var path = request.Path.Value ?? "/";

        if (path == "/health")
        {
            context.Response.StatusCode = Healthy ? 200 : 503;
            return;
        }

        if (FailWith is { } failure)
        {
            context.Response.StatusCode = failure;
            await context.Response.WriteAsync("<Error><Code>SlowDown</Code></Error>");
            return;
        }

        if (path.StartsWith("/download/", StringComparison.Ordinal))
        {
            var length = long.Parse(path["/download/".Length..], System.Globalization.CultureInfo.InvariantCulture);
            var dieAt = request.Query.TryGetValue("dieAt", out var d) ? long.Parse(d!, System.Globalization.CultureInfo.InvariantCulture) : DieAfterBytes ?? -1;
            var etag = $"\"{Version}-{length}\"";
            context.Response.Headers.ETag = etag;
            context.Response.Headers.AcceptRanges = "bytes";
            long from = 0, to = length - 1;
            if (request.Headers.Range.ToString() is { Length: > 0 } range)
            {
                if (request.Headers.IfMatch.Count > 0 && request.Headers.IfMatch.ToString() != etag)
                {
                    context.Response.StatusCode = 412;
                    return;
                }

                var spec = range["bytes=".Length..].Split('-');
                from = long.Parse(spec[0], System.Globalization.CultureInfo.InvariantCulture);
                if (spec[1].Length > 0)
                {
                    to = long.Parse(spec[1], System.Globalization.CultureInfo.InvariantCulture);
                }

                context.Response.StatusCode = 206;
                context.Response.Headers.ContentRange = $"bytes {from}-{to}/{length}";
            }

            context.Response.ContentLength = to - from + 1;
            var buffer = new byte[64 * 1024];
            for (var done = from; done <= to;)
            {
                var n = (int)Math.Min(buffer.Length, to + 1 - done);
                if (dieAt >= 0 && done - from >= dieAt)
                {
                    await context.Response.Body.FlushAsync();
                    context.Abort();
                    return;
                }

                for (var i = 0; i < n; i++)
                {
                    buffer[i] = Pattern(done + i);
                }

                await context.Response.Body.WriteAsync(buffer.AsMemory(0, n));
                done += n;
            }

            return;
        }

        if (path.StartsWith("/obj/", StringComparison.Ordinal) && Store is { } store)
        {
            if (HttpMethods.IsPut(request.Method))
            {
                using var buffer = new MemoryStream();
                await request.Body.CopyToAsync(buffer);
                store[path] = buffer.ToArray();
                return;
            }

            if (!store.TryGetValue(path, out var stored))
            {
                context.Response.StatusCode = 404;
                return;
            }

            var etag = $"\"{Convert.ToHexString(SHA256.HashData(stored))[..16]}\"";
            context.Response.Headers.ETag = etag;
            long from = 0;
            if (request.Headers.Range.ToString() is { Length: > 0 } range)
            {
                if (request.Headers.IfMatch.Count > 0 && request.Headers.IfMatch.ToString() != etag)
                {
                    context.Response.StatusCode = 412;
                    return;
                }

                from = long.Parse(range["bytes=".Length..].Split('-')[0], System.Globalization.CultureInfo.InvariantCulture);
                context.Response.StatusCode = 206;
                context.Response.Headers.ContentRange = $"bytes {from}-{stored.Length - 1}/{stored.Length}";
            }

            context.Response.ContentLength = stored.Length - from;
            await context.Response.Body.WriteAsync(stored.AsMemory((int)from));
            return;
        }

        if (path == "/upload")
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[64 * 1024];
            long total = 0;
            int read;
            while ((read = await request.Body.ReadAsync(buffer)) > 0)
            {
                hash.AppendData(buffer, 0, read);
                total += read;
            }

            await context.Response.WriteAsync($"{Convert.ToHexString(hash.GetHashAndReset())} {total}");
            return;
        }

        if (path == "/slow")
        {
            var ms = int.Parse(request.Query["ms"]!, System.Globalization.CultureInfo.InvariantCulture);
            await Task.Delay(ms);
            await context.Response.WriteAsync(Name);
            return;
        }

        if (path == "/events")
        {
            context.Response.ContentType = "text/event-stream";
            for (var i = 0; i < 3; i++)
            {
                await context.Response.WriteAsync($"data: {i}\n\n");
                await context.Response.Body.FlushAsync();
                await Task.Delay(i == 0 ? 2000 : 10);
            }

            return;
        }

        if (path == "/ws" && context.WebSockets.IsWebSocketRequest)
        {
            using var socket = await context.WebSockets.AcceptWebSocketAsync();
            var buffer = new byte[4096];
            while (true)
            {
                var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, CancellationToken.None);
                    return;
                }

                await socket.SendAsync(buffer.AsMemory(0, result.Count), result.MessageType, result.EndOfMessage, CancellationToken.None);
            }
        }

        context.Response.Headers.Server = "TestBackend";
        if (request.Headers.ContainsKey("X-Want-Hop"))
        {
            // Names a hop-by-hop header the proxy must drop. Only on request: Kestrel closes the connection after
            // a response whose Connection header lacks keep-alive, and every next request would race that close.
            context.Response.Headers.Connection = "X-Hop";
            context.Response.Headers["X-Hop"] = "secret";
        }

        await context.Response.WriteAsync(Name);
    }
}
