using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace Sidekick.Tests.Caching;

/// <summary>
/// An origin for objects too large to keep in memory: each body is deterministic pseudo-random bytes computed
/// from a seed and the offset as it is sent (SplitMix64 over the 8-byte word index), so a 1 GiB object costs
/// nothing to hold and its SHA-256 can be computed the same way. Answers GET and HEAD with Content-Length,
/// ETag, Last-Modified and Cache-Control max-age, and /health; counts the bodies it sent.
/// </summary>
internal sealed class GeneratedOrigin : IAsyncDisposable
{
    private const int ChunkSize = 256 * 1024;

    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, GeneratedObject> _objects = new();
    private readonly ConcurrentDictionary<string, int> _fullBodies = new();

    private GeneratedOrigin(WebApplication app, int port)
    {
        _app = app;
        Url = new Uri($"http://127.0.0.1:{port}");
    }

    public Uri Url { get; }

    public static async Task<GeneratedOrigin> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        GeneratedOrigin? origin = null;
        app.Run(context => origin!.HandleAsync(context));
        await app.StartAsync();
        var port = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
        origin = new GeneratedOrigin(app, port);
        return origin;
    }

    /// <summary>Serves <paramref name="size"/> bytes generated from <paramref name="seed"/> at <paramref name="path"/>.</summary>
    public GeneratedObject Add(string path, long size, ulong seed)
    {
        var item = new GeneratedObject(size, seed);
        _objects[path] = item;
        return item;
    }

    /// <summary>GET requests for <paramref name="path"/> answered with its body.</summary>
    public int Served(string path) => _fullBodies.GetValueOrDefault(path);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private async Task HandleAsync(HttpContext context)
    {
        var path = context.Request.Path.Value!;
        if (path == "/health")
        {
            return;
        }

        if (!_objects.TryGetValue(path, out var item))
        {
            context.Response.StatusCode = 404;
            return;
        }

        var headers = context.Response.Headers;
        headers.ETag = item.ETag;
        headers.LastModified = item.LastModified.ToString("r", CultureInfo.InvariantCulture);
        headers.CacheControl = "max-age=3600";
        context.Response.ContentLength = item.Size;
        if (!HttpMethods.IsGet(context.Request.Method))
        {
            return;
        }

        _fullBodies.AddOrUpdate(path, 1, (_, n) => n + 1);
        var buffer = new byte[ChunkSize];
        for (long offset = 0; offset < item.Size; offset += ChunkSize)
        {
            var length = (int)Math.Min(ChunkSize, item.Size - offset);
            item.Generate(buffer.AsSpan(0, length), offset);
            await context.Response.Body.WriteAsync(buffer.AsMemory(0, length), context.RequestAborted);
        }
    }
}

/// <summary>A generated body: <see cref="Size"/> bytes from <see cref="Seed"/>, the same bytes every time.</summary>
internal sealed class GeneratedObject(long size, ulong seed)
{
    public long Size { get; } = size;

    public ulong Seed { get; } = seed;

    public string ETag { get; } = $"\"{seed:x16}-{size}\"";

    public DateTimeOffset LastModified { get; } = DateTimeOffset.UtcNow.AddDays(-1);

    /// <summary>The bytes at <paramref name="offset"/> (a multiple of 8) onward, into <paramref name="destination"/>.</summary>
    public void Generate(Span<byte> destination, long offset)
    {
        if (offset % 8 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), "a multiple of 8");
        }

        var word = (ulong)(offset / 8);
        var whole = destination.Length / 8 * 8;
        for (var at = 0; at < whole; at += 8, word++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(destination[at..], Mix(Seed, word));
        }

        if (whole < destination.Length)
        {
            Span<byte> last = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(last, Mix(Seed, word));
            last[..(destination.Length - whole)].CopyTo(destination[whole..]);
        }
    }

    /// <summary>SHA-256 of the whole body, computed as the origin generates it.</summary>
    public byte[] Sha256()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1024 * 1024];
        for (long offset = 0; offset < Size; offset += buffer.Length)
        {
            var length = (int)Math.Min(buffer.Length, Size - offset);
            Generate(buffer.AsSpan(0, length), offset);
            hash.AppendData(buffer, 0, length);
        }

        return hash.GetHashAndReset();
    }

    /// <summary>SplitMix64's output function on the word's position in the seed's sequence.</summary>
    private static ulong Mix(ulong seed, ulong word)
    {
        var z = seed + ((word + 1) * 0x9E3779B97F4A7C15UL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
