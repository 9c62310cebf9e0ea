using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;

namespace Sidekick.Tests.Caching;

/// <summary>One object of the test origin.</summary>
internal sealed class OriginObject
{
    public required byte[] Body { get; set; }
    /// <summary>The ETag sent, or none when null (an origin without validators).</summary>
    public string? ETag { get; set; } = "\"" + Guid.NewGuid().ToString("N") + "\"";
    public string? CacheControl { get; set; }
    public string? Vary { get; set; }
    /// <summary>
    /// When set, only "Authorization: Bearer &lt;user&gt;" or a presigned query with X-Amz-Signature=&lt;user&gt; may
    /// read it (conditional requests included); others get 403.
    /// </summary>
    public string? AllowedUser { get; set; }
    public int? FailWith { get; set; }
}

/// <summary>
/// An object-store-like origin on loopback: GET/HEAD with ETag, Last-Modified and conditional requests,
/// per-object Cache-Control, Vary and access control, PUT and DELETE. Counts full bodies it sent.
/// </summary>
internal sealed class CacheTestBackend : IAsyncDisposable
{
    private readonly WebApplication _app;

    private CacheTestBackend(WebApplication app, int port)
    {
        _app = app;
        Url = new Uri($"http://127.0.0.1:{port}");
    }

    public Uri Url { get; }

    public ConcurrentDictionary<string, OriginObject> Objects { get; } = new();

    public ConcurrentDictionary<string, int> FullBodies { get; } = new();

    /// <summary>Body bytes sent in 206 answers, by path.</summary>
    public ConcurrentDictionary<string, long> RangeBytes { get; } = new();

    /// <summary>Every request head's Range and conditional fields, in order: "GET /path range=... if-none-match=... -> status".</summary>
    public ConcurrentQueue<string> Log { get; } = new();

    public ConcurrentQueue<string> ConditionalRequests { get; } = new();

    /// <summary>Requests refused for lack of credentials ("GET /path", " conditional" when it was one).</summary>
    public ConcurrentQueue<string> Denied { get; } = new();

    /// <summary>Every request as it arrives ("GET /path"), before its answer is decided.</summary>
    public ConcurrentQueue<string> Arrivals { get; } = new();

    /// <summary>While set, an answer to a GET of an object waits for it before its head is sent (an origin slow to answer).</summary>
    public Task? HeadsWaitFor { get; set; }

    /// <summary>Milliseconds to wait between 64 KiB chunks (a slow origin).</summary>
    public int ChunkDelayMs { get; set; }

    /// <summary>While set, the last 64 KiB chunk of a whole body waits for it: a fill held open until the test lets it end.</summary>
    public Task? LastChunkWaitsFor { get; set; }

    /// <summary>While set, the last 64 KiB chunk of the first whole body of each path waits for it: an origin that stalls once.</summary>
    public Task? FirstBodysLastChunkWaitsFor { get; set; }

    /// <summary>When (Stopwatch timestamp) the last byte of the latest whole body of each path was handed to the server.</summary>
    public ConcurrentDictionary<string, long> BodySentAt { get; } = new();

    public static async Task<CacheTestBackend> StartAsync()
    {
        CacheTestBackend? backend = null;
        var (app, port) = await LoopbackApp.StartAsync(context => backend!.HandleAsync(context));
        backend = new CacheTestBackend(app, port);
        return backend;
    }

    public OriginObject Put(string path, int size, string? cacheControl = "max-age=300")
    {
        var item = new OriginObject { Body = RandomNumberGenerator.GetBytes(size), CacheControl = cacheControl };
        Objects[path] = item;
        return item;
    }

    public int Served(string path) => FullBodies.GetValueOrDefault(path);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private static (long First, long Last)? SingleRange(string range, long length)
    {
        if (!range.StartsWith("bytes=", StringComparison.Ordinal) || range.Contains(',', StringComparison.Ordinal) || range[6..].Split('-') is not [var a, var b] ||
            !long.TryParse(a, out var first) || first >= length)
        {
            return null;
        }

        return (first, b.Length == 0 ? length - 1 : Math.Min(long.Parse(b, System.Globalization.CultureInfo.InvariantCulture), length - 1));
    }

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var path = request.Path.Value!;
        if (path == "/health")
        {
            return;
        }

        Arrivals.Enqueue($"{request.Method} {path}");
        context.Response.OnStarting(() =>
        {
            Log.Enqueue($"{request.Method} {path} range={request.Headers.Range} if-none-match={request.Headers.IfNoneMatch} if-match={request.Headers.IfMatch} -> {context.Response.StatusCode}");
            return Task.CompletedTask;
        });

        if (HttpMethods.IsPut(request.Method))
        {
            using var buffer = new MemoryStream();
            await request.Body.CopyToAsync(buffer);
            Objects[path] = new OriginObject { Body = buffer.ToArray(), CacheControl = "max-age=300" };
            return;
        }

        if (HttpMethods.IsDelete(request.Method))
        {
            Objects.TryRemove(path, out _);
            context.Response.StatusCode = 204;
            return;
        }

        if (!Objects.TryGetValue(path, out var item))
        {
            context.Response.StatusCode = 404;
            return;
        }

        if (HttpMethods.IsGet(request.Method) && HeadsWaitFor is { } held)
        {
            await held;
        }

        // A stand-in for SigV4, which signs the Range header: a request that says which Range it signed is
        // refused when the Range it carries differs.
        if (request.Headers.TryGetValue("X-Test-Signed-Range", out var signedRange) && request.Headers.Range.ToString() != signedRange.ToString())
        {
            context.Response.StatusCode = 403;
            await context.Response.WriteAsync("<Error><Code>SignatureDoesNotMatch</Code></Error>");
            return;
        }

        if (item.FailWith is { } failure)
        {
            context.Response.StatusCode = failure;
            await context.Response.WriteAsync("origin error");
            return;
        }

        if (item.AllowedUser is { } user && request.Headers.Authorization.ToString() != "Bearer " + user && request.Query["X-Amz-Signature"] != user)
        {
            Denied.Enqueue(request.Method + " " + path + (request.Headers.IfNoneMatch.Count > 0 ? " conditional" : ""));
            context.Response.StatusCode = 403;
            await context.Response.WriteAsync("<Error><Code>AccessDenied</Code></Error>");
            return;
        }

        var body = item.Body;
        if (item.Vary is not null)
        {
            // A different representation per Accept-Encoding, like a compressing origin.
            var prefix = System.Text.Encoding.ASCII.GetBytes($"[{request.Headers.AcceptEncoding}]");
            body = [.. prefix, .. item.Body];
            context.Response.Headers.Vary = item.Vary;
        }

        if (item.ETag is { } etag)
        {
            context.Response.Headers.ETag = etag;
        }

        context.Response.Headers.LastModified = DateTimeOffset.UtcNow.AddHours(-1).ToString("r");
        if (item.CacheControl is not null)
        {
            context.Response.Headers.CacheControl = item.CacheControl;
        }

        if (request.Headers.IfNoneMatch.ToString() is { Length: > 0 } inm)
        {
            ConditionalRequests.Enqueue(path);
            if (inm == item.ETag)
            {
                context.Response.StatusCode = 304;
                return;
            }
        }

        if (request.Headers.IfMatch.ToString() is { Length: > 0 } ifMatch && ifMatch != "*" && ifMatch != item.ETag)
        {
            context.Response.StatusCode = 412;
            return;
        }

        if (!HttpMethods.IsHead(request.Method) && item.Vary is null && SingleRange(request.Headers.Range.ToString(), body.Length) is var (first, last))
        {
            // One range of the object, as S3 answers the parallel ranged reads of its clients.
            context.Response.StatusCode = 206;
            context.Response.Headers.ContentRange = $"bytes {first}-{last}/{body.Length}";
            context.Response.ContentLength = last - first + 1;
            RangeBytes.AddOrUpdate(path, last - first + 1, (_, n) => n + last - first + 1);
            await context.Response.Body.WriteAsync(body.AsMemory((int)first, (int)(last - first + 1)));
            return;
        }

        if (request.Headers["x-amz-checksum-mode"] == "ENABLED")
        {
            // As S3 and MinIO: the whole object's checksum on a whole-object answer to a client that asks, never on a range.
            context.Response.Headers["x-amz-checksum-sha256"] = Convert.ToBase64String(System.Security.Cryptography.SHA256.HashData(body));
        }

        context.Response.ContentLength = body.Length;
        if (HttpMethods.IsHead(request.Method))
        {
            return;
        }

        var lastChunkWaitsFor = FullBodies.AddOrUpdate(path, 1, (_, n) => n + 1) == 1 ? LastChunkWaitsFor ?? FirstBodysLastChunkWaitsFor : LastChunkWaitsFor;
        for (var offset = 0; offset < body.Length; offset += 64 * 1024)
        {
            if (offset + 64 * 1024 >= body.Length && lastChunkWaitsFor is { } release)
            {
                await release;
            }

            await context.Response.Body.WriteAsync(body.AsMemory(offset, Math.Min(64 * 1024, body.Length - offset)));
            if (ChunkDelayMs > 0)
            {
                await Task.Delay(ChunkDelayMs);
            }
        }

        BodySentAt[path] = System.Diagnostics.Stopwatch.GetTimestamp();
    }
}
