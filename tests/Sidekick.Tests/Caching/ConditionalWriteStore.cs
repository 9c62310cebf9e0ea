using System.Collections.Concurrent;
using System.Net;

namespace Sidekick.Tests.Caching;

/// <summary>
/// s3rver as AWS S3 and MinIO behave for conditional writes: a PUT with <c>If-None-Match: *</c> of an object that
/// exists gets 412 PreconditionFailed (s3rver itself ignores the condition and overwrites). Every other request is
/// passed to s3rver unchanged, its Host included, so signatures still verify; the requests are logged.
/// </summary>
internal sealed class ConditionalWriteStore : IAsyncDisposable
{
    private static readonly HashSet<string> Unforwarded = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Content-Type", "Content-MD5", "Expect",
    };

    private readonly WebApplication _app;
    private readonly HttpClient _upstream;

    private ConditionalWriteStore(WebApplication app, HttpClient upstream, int port)
    {
        _app = app;
        _upstream = upstream;
        Url = new Uri($"http://127.0.0.1:{port}");
    }

    public Uri Url { get; }

    /// <summary>"METHOD /path" of every request, with " if-none-match" for conditional writes, in order.</summary>
    public ConcurrentQueue<string> Requests { get; } = new();

    public static async Task<ConditionalWriteStore> StartAsync(Uri s3rver)
    {
        var upstream = new HttpClient(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false }) { BaseAddress = s3rver };
        ConditionalWriteStore? store = null;
        var (app, port) = await LoopbackApp.StartAsync(context => store!.RelayAsync(context));
        store = new ConditionalWriteStore(app, upstream, port);
        return store;
    }

    private async Task RelayAsync(HttpContext context)
    {
        var request = context.Request;
        var target = request.Path + request.QueryString;
        var conditional = HttpMethods.IsPut(request.Method) && request.Headers.IfNoneMatch.ToString() == "*";
        Requests.Enqueue($"{request.Method} {request.Path}{(conditional ? " if-none-match" : "")}");
        if (conditional)
        {
            using var head = await _upstream.SendAsync(new HttpRequestMessage(HttpMethod.Head, target));
            if (head.StatusCode == HttpStatusCode.OK)
            {
                context.Response.StatusCode = StatusCodes.Status412PreconditionFailed;
                context.Response.ContentType = "application/xml";
                await context.Response.WriteAsync("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PreconditionFailed</Code>" +
                                                  "<Message>At least one of the pre-conditions you specified did not hold</Message></Error>");
                return;
            }
        }

        using var forward = new HttpRequestMessage(new HttpMethod(request.Method), target);
        if (request.ContentLength is > 0 || HttpMethods.IsPut(request.Method) || HttpMethods.IsPost(request.Method))
        {
            forward.Content = new StreamContent(request.Body);
            forward.Content.Headers.ContentLength = request.ContentLength;
            if (request.ContentType is { } type)
            {
                forward.Content.Headers.TryAddWithoutValidation("Content-Type", type);
            }

            if (request.Headers.ContentMD5.Count > 0)
            {
                forward.Content.Headers.TryAddWithoutValidation("Content-MD5", request.Headers.ContentMD5.ToString());
            }
        }

        foreach (var (name, values) in request.Headers)
        {
            if (!Unforwarded.Contains(name) && !forward.Headers.TryAddWithoutValidation(name, (IEnumerable<string?>)values))
            {
                forward.Content?.Headers.TryAddWithoutValidation(name, (IEnumerable<string?>)values);
            }
        }

        using var answer = await _upstream.SendAsync(forward, HttpCompletionOption.ResponseHeadersRead, context.RequestAborted);
        context.Response.StatusCode = (int)answer.StatusCode;
        foreach (var (name, values) in answer.Headers.Concat(answer.Content.Headers))
        {
            if (!Unforwarded.Contains(name) || name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase) || name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase))
            {
                context.Response.Headers[name] = values.ToArray();
            }
        }

        await answer.Content.CopyToAsync(context.Response.Body, context.RequestAborted);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.DisposeAsync();
        _upstream.Dispose();
    }
}
