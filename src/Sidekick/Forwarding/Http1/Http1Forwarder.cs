using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;
using Sidekick.Networking;
using Sidekick.Topology;
using Sidekick.Topology.Dns;
using Yarp.ReverseProxy.Forwarder;

namespace Sidekick.Forwarding.Http1;

/// <summary>
/// The forwarder for the plain case, which is nearly all of a sidecar's traffic: an HTTP/1.1 backend over
/// plain TCP and a request without a body or with a small one of known length. It writes the request head
/// from a pooled buffer, parses the response head in place, and copies the body through one buffer per
/// exchange, over its own keep-alive connections; no HttpRequestMessage, HttpResponseMessage or header
/// collections in between. Everything else (TLS backends, upgrades, Expect: 100-continue, large or
/// chunked uploads, an HTTP proxy in the environment) goes to YARP. Both report outcomes the same way
/// (<see cref="ForwarderError"/> and <see cref="IForwarderErrorFeature"/>), so retries, download resume,
/// metering and tracing do not know which path carried a request. This path reports to the exchange meter
/// directly; YARP writes through the HttpContext, so the meter is installed in front of it first.
/// </summary>
internal sealed class Http1Forwarder : IDisposable
{
    /// <summary>Larger bodies go to YARP, which sends them while already reading an early response.</summary>
    public const int MaxInlineBodyBytes = 64 * 1024;

    /// <summary>Chunk-size lines and trailers larger than this are not a body anyone should stream.</summary>
    private const int MaxChunkFramingBytes = 64 * 1024;

    private static readonly TimeSpan DefaultActivityTimeout = TimeSpan.FromSeconds(100);

    private readonly IHttpForwarder _fallback;
    private readonly BackendResolve _resolve;
    private readonly EventLoops? _loops;
    private readonly TimeSpan _connectTimeout;
    private readonly BackendConnectionPools _pools;
    private readonly PathReason? _disabled;
    private readonly long[] _chosen = new long[PathChoice.Reasons.Length];

    /// <param name="loops">Sidekick's event loops for backend sockets; null uses the .NET socket engine.</param>
    /// <param name="disabled">Why every request goes to YARP (forced by the operator, an HTTP proxy), or null.</param>
    public Http1Forwarder(
        IHttpForwarder fallback, BackendResolve? resolve, EventLoops? loops, TimeSpan connectTimeout, TimeSpan idleTimeout, PathReason? disabled,
        TimeProvider? time = null)
    {
        _fallback = fallback;
        _resolve = resolve ?? ResolveDirectAsync;
        _loops = loops;
        _connectTimeout = connectTimeout;
        _pools = new BackendConnectionPools(idleTimeout, loops?.Count ?? 1, time ?? TimeProvider.System);
        _disabled = disabled;
    }

    /// <summary>Requests this path carried (the rest went to YARP).</summary>
    public long Forwarded => Volatile.Read(ref _chosen[(int)PathReason.Plain]);

    /// <summary>Idle backend connections on which something arrived that the event loop has seen (for tests).</summary>
    internal int IdleWithArrivals => _pools.IdleWithArrivals;

    /// <summary>Idle backend connections (for tests).</summary>
    internal int Idle => _pools.Idle;

    /// <summary>Requests forwarded for each <see cref="PathReason"/> (plain ones on this path, the rest on YARP).</summary>
    public long ForwardedFor(PathReason reason) => Volatile.Read(ref _chosen[(int)reason]);

    /// <summary>
    /// Forwards one attempt of the exchange <paramref name="meter"/> counts, on the path <see cref="Choose"/>
    /// picks; the choice is left on the meter for the trace record.
    /// </summary>
    public ValueTask<ForwarderError> SendAsync(
        HttpContext context, ExchangeMeter meter, Backend backend, HttpMessageInvoker httpClient, ForwarderRequestConfig requestConfig)
    {
        var destinationPrefix = backend.DestinationPrefix;
        var choice = Choose(context, meter.RequestMayHaveBody, backend, out var rawTarget, out var bodyLength);
        meter.Path = choice;
        Interlocked.Increment(ref _chosen[(int)choice.Reason]);
        if (choice.Path == ForwardingPath.Http1)
        {
            return ForwardAsync(context, meter.Response, _pools.For(destinationPrefix), rawTarget!, bodyLength, requestConfig.ActivityTimeout ?? DefaultActivityTimeout);
        }

        if (!meter.RequestMayHaveBody && context.Request.ContentLength is null && !IdempotentMethods.Contains(context.Request.Method))
        {
            // .NET's HttpClient sends a request without content again when a kept-alive connection ends before the
            // answer (dotnet/runtime#86714), whatever its method: a bodyless POST the backend had read and acted on
            // would be carried out twice. It does not for a request with content, and YARP gives one with
            // "Content-Length: 0" (the same request: no body; servers expect the field of a POST anyway).
            context.Request.ContentLength = 0;
        }

        meter.Install();
        return _fallback.SendAsync(context, destinationPrefix, httpClient, requestConfig, SidekickTransformer.Instance);
    }

    public void Dispose() => _pools.Dispose();

    /// <summary>
    /// The one place that decides the path: this one for a plain HTTP/1.1 exchange (with the raw request
    /// target and the length of its body, 0 for none), YARP for everything else, with the reason.
    /// </summary>
    /// <param name="mayHaveBody">What the server said of the request's content (the meter asked it already).</param>
    public PathChoice Choose(HttpContext context, bool mayHaveBody, Backend backend, out string? rawTarget, out int bodyLength)
    {
        rawTarget = null;
        bodyLength = 0;
        if (_disabled is { } disabled && !(disabled == PathReason.HttpProxy && backend.OnLoopback))
        {
            // (A loopback backend never goes through the environment's proxy, so nothing stops this path for it.)
            return new PathChoice(ForwardingPath.Yarp, disabled);
        }

        if (!backend.DestinationPrefix.StartsWith("http://", StringComparison.OrdinalIgnoreCase))
        {
            return new PathChoice(ForwardingPath.Yarp, PathReason.TlsBackend);
        }

        var request = context.Request;
        if (HttpMethods.IsConnect(request.Method))
        {
            return new PathChoice(ForwardingPath.Yarp, PathReason.Connect);
        }

        if (request.Headers.ContainsKey(HeaderNames.Expect))
        {
            return new PathChoice(ForwardingPath.Yarp, PathReason.Expect100);
        }

        // An HTTP/1.1 upgrade names itself in Connection, so a request without that field is not asked about (a
        // feature lookup costs ~160 instructions under Native AOT: a generic virtual call, then Kestrel's chain of
        // type tests); an extended CONNECT (a WebSocket over HTTP/2) has the method CONNECT, sent to YARP above.
        if (request.Headers.Connection.Count > 0 && context.Features.Get<IHttpUpgradeFeature>() is { IsUpgradableRequest: true })
        {
            return new PathChoice(ForwardingPath.Yarp, PathReason.Upgrade);
        }

        if (mayHaveBody)
        {
            if (request.ContentLength is not { } length)
            {
                return new PathChoice(ForwardingPath.Yarp, PathReason.BodyUnknownLength);
            }

            if (length > MaxInlineBodyBytes)
            {
                return new PathChoice(ForwardingPath.Yarp, PathReason.BodyOver64K);
            }

            bodyLength = (int)length;
        }

        // Origin-form only; an absolute-form or asterisk target keeps YARP's handling.
        var target = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (target is not { Length: > 0 } || target[0] != '/')
        {
            bodyLength = 0;
            return new PathChoice(ForwardingPath.Yarp, PathReason.TargetNotOriginForm);
        }

        rawTarget = target;
        return new PathChoice(ForwardingPath.Http1, PathReason.Plain);
    }

    /// <summary>
    /// Sends the request on a kept-alive or new connection and copies the response to the client. A kept-alive
    /// connection the backend had already closed gets the same bytes again on a fresh one.
    /// </summary>
    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder<>))]
    private async ValueTask<ForwarderError> ForwardAsync(
        HttpContext context, IMeteredResponseBody metered, BackendConnectionPool pool, string rawTarget, int bodyLength, TimeSpan activityTimeout)
    {
        var resendable = IdempotentMethods.Contains(context.Request.Method);
        using var head = RequestHead.Write(context, rawTarget, pool.Authority, bodyLength);
        metered.CountedRequestHeaders(head.HeaderBytes, head.ClientFields);
        var headBytes = head.Bytes;
        for (var attempt = 1; ; attempt++)
        {
            if (context.RequestAborted.IsCancellationRequested)
            {
                // The client left before anything was sent (an HTTP/2 stream reset right after its headers): no backend
                // connection is taken or opened for it. A rapid reset made one a stream, each closed unused: 700 new
                // backend connections a second from one client thread, the host's ports to the backend gone in a minute.
                return ClientLeftBeforeSending(context);
            }

            BackendConnection connection;
            try
            {
                // A resend takes a new connection: after a backend restart every idle one is stale.
                connection = (attempt == 1 ? pool.TakeIdle(mustBeAlive: !resendable) : null) ??
                             await pool.ConnectAsync(_resolve, _loops, _connectTimeout, context.RequestAborted);
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException or IOException)
            {
                // On the first attempt nothing was read from the client yet, so the caller may still try another
                // backend (ForwarderError.Request). A resend's body was read on the first: another backend may have it
                // only from a buffer the caller kept (RequestBodyDestination); tried unbuffered, the client's body was
                // gone, and its request was answered 400 as if the client had sent too little.
                return FailConnect(context, pool, attempt > 1 && bodyLength > 0 ? ForwarderError.RequestBodyDestination : ForwarderError.Request, ex);
            }

            if (attempt == 1 && bodyLength > 0)
            {
                // Read the small body only once a connection exists; it goes out with the head in one write.
                var body = head.ReserveBody(bodyLength);
                headBytes = head.Bytes;
                if (await ReadBodyAsync(context, body) is { } clientError)
                {
                    pool.Return(connection);
                    return clientError;
                }

                if (!resendable && connection.HasServedRequest && connection.LooksDead())
                {
                    // A slow client's body outlasted the backend's keep-alive: it closed this idle connection after
                    // TakeIdle found it alive. A request that cannot be resent must not find that out by sending on it.
                    connection.Dispose();
                    try
                    {
                        connection = await pool.ConnectAsync(_resolve, _loops, _connectTimeout, context.RequestAborted);
                    }
                    catch (Exception ex) when (ex is SocketException or OperationCanceledException or IOException)
                    {
                        // The body is read and not kept: not retried on another backend (RequestBodyDestination).
                        return FailConnect(context, pool, ForwarderError.RequestBodyDestination, ex);
                    }
                }
            }

            if (context.RequestAborted.IsCancellationRequested)
            {
                // Gone while the connection was being made: nothing was sent on it, so it serves the next request.
                pool.Return(connection);
                return ClientLeftBeforeSending(context);
            }

            // One request and response on this connection. Written out in the attempt loop rather than
            // awaited as its own method: one state machine per exchange instead of two.
            connection.BeginExchange(activityTimeout);
            var registration = context.RequestAborted.UnsafeRegister(static c => ((BackendConnection)c!).Dispose(), connection);
            var reused = connection.HasServedRequest;
            var receivedAny = false;
            ResponseHead response;
            try
            {
                await connection.SendAsync(headBytes);
                int headLength;
                // Where the search for the head's end stopped: offsets from the first unconsumed byte, which stay
                // true when the buffer is compacted or grown; reset for the head after a 1xx.
                var scan = default(HeadScan);
                while (true)
                {
                    headLength = ResponseHead.FindEnd(connection.Buffered, ref scan);
                    if (headLength < 0)
                    {
                        // In two steps, so nothing sits between this state machine and the socket's.
                        var received = await connection.ReceiveIntoAsync(connection.ReceiveRoom(BackendLimits.MaxResponseHeadBytes));
                        connection.Received(received);
                        if (received == 0)
                        {
                            throw new HttpRequestException(HttpRequestError.ResponseEnded, "the backend closed the connection before a complete response head");
                        }

                        receivedAny = true;
                        continue;
                    }

                    // 1xx interim responses (100 Continue, 103 Early Hints) are not forwarded, as with HttpClient. They do
                    // not move the deadline: the final head must come within --backend-timeout of the request, as on YARP's
                    // path, or a backend sending "102 Processing" every few seconds held the request for ever.
                    if (ResponseHead.PeekStatus(connection.Buffered[..headLength]) is >= 100 and < 200 and not 101)
                    {
                        connection.Consume(headLength);
                        scan = default;
                        continue;
                    }

                    break;
                }

                response = ResponseHead.Apply(connection.Buffered[..headLength], context.Response, HttpMethods.IsHead(context.Request.Method), pool.HeaderValues);
                context.Response.Headers[ForwardingHeaders.ProxyMarkerName] = ForwardingHeaders.ProxyMarker;
                connection.Consume(headLength);
                connection.Touch(); // the body's reads move the deadline on from here
            }
            catch (Exception ex) when (ex is SocketException or IOException or ObjectDisposedException or HttpRequestException or InvalidOperationException)
            {
                registration.Dispose();
                Close(connection);
                if (context.RequestAborted.IsCancellationRequested)
                {
                    return Fail(context, ForwarderError.RequestCanceled, ex);
                }

                if (ex is InvalidOperationException)
                {
                    // The server refused a field of the head as we applied it: the backend's answer, not the socket.
                    ex = new HttpRequestException(HttpRequestError.InvalidResponse, $"the backend sent a response head the client's connection cannot carry ({ex.Message})", ex);
                }

                // A kept-alive connection that ended before any answer: most often the backend had closed it as we
                // sent, so the same bytes go out again on a fresh one, for idempotent methods only (RFC 9110 §9.2.2):
                // a backend that read the request and then crashed may have acted on it, and a bodyless POST (S3's
                // POST ?uploads) would then be carried out twice. Not after the activity timeout either: then the
                // backend was alive, only slow.
                if (reused && !receivedAny && !connection.TimedOut && resendable &&
                    ex is not HttpRequestException { HttpRequestError: HttpRequestError.InvalidResponse })
                {
                    continue;
                }

                return connection.TimedOut
                    ? Fail(context, ForwarderError.RequestTimedOut, new TimeoutException("the backend did not answer within the activity timeout", ex))
                    : Fail(context, ForwarderError.Request, ex as HttpRequestException ?? new HttpRequestException(HttpRequestError.Unknown, TransportFailure(ex), ex));
            }

            if (metered.Observer is { } observer && !observer.OnResponseHead(context))
            {
                // Taken over (the cache answers from the store): the body, if any, is not read, so the
                // connection cannot carry another exchange unless there is none.
                registration.Dispose();
                Release(connection, response, response.Framing == BodyFraming.None && response.Reusable);
                return ForwarderError.None;
            }

            try
            {
                await CopyBodyAsync(context, metered, connection, response);
            }
            catch (Exception ex) when (ex is SocketException or IOException or ObjectDisposedException or HttpRequestException or OperationCanceledException)
            {
                registration.Dispose();
                Close(connection);
                var (error, cause) = context.RequestAborted.IsCancellationRequested ? (ForwarderError.ResponseBodyCanceled, ex)
                    : ex is ClientWriteException ? (ForwarderError.ResponseBodyClient, ex.InnerException!)
                    : connection.TimedOut ? (ForwarderError.ResponseBodyDestination, new TimeoutException("the backend stalled past the activity timeout", ex))
                    : (ForwarderError.ResponseBodyDestination, ex);
                if (error == ForwarderError.ResponseBodyDestination && context.Response.HasStarted)
                {
                    // What was written of the response goes out before the abort, as on YARP's path: the client
                    // sees the head and a body cut short, not a connection closed without an answer.
                    await FlushBeforeAbortAsync(context);
                }

                return Fail(context, error, cause);
            }

            registration.Dispose();
            Release(connection, response, response.Reusable);
            return ForwarderError.None;
        }
    }

    /// <summary>After an exchange: back to the pool when it can carry another one, closed otherwise.</summary>
    private static void Release(BackendConnection connection, ResponseHead response, bool reusable)
    {
        if (reusable && connection.BufferedCount == 0 && !connection.IsClosed)
        {
            connection.EndExchange();
            connection.HasServedRequest = true;
            connection.KeepAliveSeconds = response.KeepAliveSeconds;
            connection.Pool.Return(connection);
        }
        else
        {
            Close(connection);
        }
    }

    private static async ValueTask FlushBeforeAbortAsync(HttpContext context)
    {
        try
        {
            await context.Response.BodyWriter.FlushAsync(context.RequestAborted);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or InvalidOperationException or ObjectDisposedException)
        {
        }
    }

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder<>))]
    private static async ValueTask<ForwarderError?> ReadBodyAsync(HttpContext context, Memory<byte> body)
    {
        try
        {
            while (!body.IsEmpty)
            {
                var read = await context.Request.Body.ReadAsync(body, context.RequestAborted);
                if (read == 0)
                {
                    return Fail(context, ForwarderError.RequestBodyClient, new IOException("the client sent less request body than its Content-Length"));
                }

                body = body[read..];
            }

            return null;
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or BadHttpRequestException)
        {
            return Fail(context, context.RequestAborted.IsCancellationRequested ? ForwarderError.RequestCanceled : ForwarderError.RequestBodyClient, ex);
        }
    }

    /// <summary>The response body as the backend framed it (the caller's await is the only state machine).</summary>
    private static ValueTask CopyBodyAsync(HttpContext context, IMeteredResponseBody metered, BackendConnection connection, ResponseHead response) => response.Framing switch
    {
        BodyFraming.ContentLength => CopyLengthDirectAsync(context, metered, connection, response.ContentLength),
        BodyFraming.Chunked => CopyChunkedAsync(metered.Body, connection),
        BodyFraming.UntilClose => CopyToEndAsync(metered.Body, connection),
        _ => ValueTask.CompletedTask,
    };

    /// <summary>
    /// A body of known length, written into the server's output buffers: the bytes that came with the
    /// head are copied there and sent with the head at once, the rest is received straight into them. No stream
    /// layers and no second copy.
    /// </summary>
    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder))]
    private static async ValueTask CopyLengthDirectAsync(HttpContext context, IMeteredResponseBody server, BackendConnection connection, long remaining)
    {
        var writer = server.ServerWriter;
        try
        {
            await context.Response.StartAsync();
            var early = (int)Math.Min(connection.BufferedCount, remaining);
            if (early > 0)
            {
                // The body bytes that arrived with the head.
                server.Wrote(connection.Buffered[..early]);
                writer.Write(connection.Buffered[..early]);
                connection.Consume(early);
                remaining -= early;
            }
        }
        catch (Exception ex)
        {
            throw new ClientWriteException(ex);
        }

        if (remaining == 0)
        {
            // The whole body came with the head (the common small response): the response's completion, right after
            // this, flushes both anyway, so a flush here would only be one more pass through Kestrel's writer.
            return;
        }

        // The head, and the body bytes that came with it, leave now: the rest may be slow to come (a slow or stalled
        // origin, a stream), and the client must not wait for it to see them.
        await FlushToClientAsync(writer, connection, server.Observer);
        var lending = server.Observer is not null ? LendingFor(context) : null;
        var window = new ReceiveWindow(ReceiveBudget.Shared);
        try
        {
            while (remaining > 0)
            {
                // A fill whose spool writer is behind: wait for it here, never on the loop thread (no observer: at once).
                var observerReady = server.WhenObserverReady();
                if (!observerReady.IsCompleted)
                {
                    await observerReady;
                    connection.Touch();
                }

                var want = (int)Math.Min(remaining, window.Size);
                var loan = lending is not null ? server.Observer?.LendBody(remaining) : null;
                var memory = loan is not null
                    ? lending!.GetMemory(writer, loan, want) // received into the fill's spool buffer, sent from there
                    : writer.GetMemory(want);
                if (memory.Length > remaining)
                {
                    memory = memory[..(int)remaining];
                }

                var received = await connection.ReceiveIntoAsync(memory);
                connection.Touch();
                if (received == 0)
                {
                    throw new HttpIOException(HttpRequestError.ResponseEnded, $"the backend closed the connection with {remaining} bytes of the body still to come");
                }

                server.Wrote(memory.Span[..received]);
                writer.Advance(received);
                remaining -= received;
                if (loan is null && received >= want)
                {
                    window.Filled(remaining); // a loan's size is the spool buffer's, not the window's
                }

                await FlushToClientAsync(writer, connection, server.Observer);
            }
        }
        finally
        {
            window.Close();
        }
    }

    /// <summary>
    /// The client connection's lending output pool, where the response's bytes go from that pool's memory to the
    /// socket unchanged: plain HTTP/1.1 on sidekick's own socket engine (TLS and HTTP/2 write through pipes of their
    /// own, which would never take the loan).
    /// </summary>
    private static Networking.LendingPool? LendingFor(HttpContext context) =>
        !context.Request.IsHttps && HttpProtocol.IsHttp11(context.Request.Protocol) ? context.Features.Get<Networking.LoopConnection>()?.Lending : null;

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder))]
    private static async ValueTask FlushToClientAsync(PipeWriter writer, BackendConnection connection, IExchangeObserver? observer)
    {
        FlushResult flushed;
        try
        {
            var flush = writer.FlushAsync();
            if (flush.IsCompleted)
            {
                flushed = flush.Result;
            }
            else
            {
                ClientHolds(connection);
                observer?.ClientHolding(true);
                try
                {
                    flushed = await flush;
                }
                finally
                {
                    observer?.ClientHolding(false);
                }
            }
        }
        catch (Exception ex)
        {
            throw new ClientWriteException(ex);
        }

        if (flushed.IsCompleted || flushed.IsCanceled)
        {
            throw new ClientWriteException(new IOException("the client connection closed during the response body"));
        }

        connection.Touch();
    }

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder))]
    private static async ValueTask CopyChunkedAsync(Stream client, BackendConnection connection)
    {
        var decoder = default(ChunkedDecoder);
        while (true)
        {
            switch (decoder.Next(connection.Buffered, out var consumed, out var dataStart, out var dataLength))
            {
                case ChunkedDecoder.Step.Data:
                    connection.Consume(dataStart);
                    await WriteToClientAsync(client, connection, dataLength);
                    connection.Consume(consumed - dataStart - dataLength);
                    break;
                case ChunkedDecoder.Step.NeedMore:
                    connection.Consume(consumed);
                    if (await connection.ReceiveAsync(MaxChunkFramingBytes) == 0)
                    {
                        throw new HttpIOException(HttpRequestError.ResponseEnded, "the backend closed the connection inside a chunked body");
                    }

                    break;
                default:
                    connection.Consume(consumed);
                    return;
            }
        }
    }

    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder))]
    private static async ValueTask CopyToEndAsync(Stream client, BackendConnection connection)
    {
        connection.UseLargeBuffer();
        while (connection.BufferedCount > 0 || await connection.ReceiveAsync() > 0)
        {
            await WriteToClientAsync(client, connection, connection.BufferedCount);
        }
    }

    /// <summary>Writes the next <paramref name="count"/> buffered bytes to the client and consumes them.</summary>
    [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder))]
    private static async ValueTask WriteToClientAsync(Stream client, BackendConnection connection, int count)
    {
        try
        {
            var write = client.WriteAsync(connection.BufferedMemory[..count]);
            if (!write.IsCompleted)
            {
                ClientHolds(connection);
            }

            await write;
        }
        catch (Exception ex) when (ex is not ClientWriteException)
        {
            throw new ClientWriteException(ex);
        }

        connection.Consume(count);
        connection.Touch();
    }

    /// <summary>
    /// The copy waits for the client to take bytes, not for the backend: the backend's silence clock stops until the
    /// next <see cref="BackendConnection.Touch"/>. A client that paused reading longer than --backend-timeout had its
    /// backend connection cut, counted as the backend's broken response (five such clients marked a healthy backend
    /// down) and its body resumed elsewhere. A client too slow is --client-send-timeout's to judge.
    /// </summary>
    private static void ClientHolds(BackendConnection connection) => connection.ActivityDeadline = 0;

    private static void Close(BackendConnection connection)
    {
        connection.EndExchange();
        connection.Dispose();
    }

    /// <summary>No connection to the backend could be made: <paramref name="error"/> says whether another backend may be tried.</summary>
    private static ForwarderError FailConnect(HttpContext context, BackendConnectionPool pool, ForwarderError error, Exception exception) =>
        context.RequestAborted.IsCancellationRequested
            ? Fail(context, ForwarderError.RequestCanceled, exception)
            : Fail(context, error, new HttpRequestException(HttpRequestError.ConnectionError, ConnectFailure(pool, exception), exception));

    private static ForwarderError ClientLeftBeforeSending(HttpContext context) =>
        Fail(context, ForwarderError.RequestCanceled, new OperationCanceledException("the client left before the request was sent"));

    private static ForwarderError Fail(HttpContext context, ForwarderError error, Exception exception)
    {
        context.Features.Set<IForwarderErrorFeature>(new ErrorFeature(error, exception));
        var response = context.Response;
        if (!response.HasStarted)
        {
            // As YARP does: nothing of the failed attempt (status, headers) may leak into what follows.
            response.Clear();
            response.StatusCode = error switch
            {
                ForwarderError.RequestTimedOut => StatusCodes.Status504GatewayTimeout,
                ForwarderError.RequestBodyClient => StatusCodes.Status400BadRequest,
                _ => StatusCodes.Status502BadGateway,
            };
        }

        return error;
    }

    private static string ConnectFailure(BackendConnectionPool pool, Exception ex) =>
        $"{TransportFailure(ex)} ({pool.Authority})";

    private static string TransportFailure(Exception ex) => ex switch
    {
        SocketException socket => socket.Message,
        _ => ex.InnerException?.Message ?? ex.Message,
    };

    /// <summary>Without DNS hooks (tests): an IP literal as it is, names through the system resolver.</summary>
    private static async ValueTask<IPAddress[]> ResolveDirectAsync(string host, CancellationToken cancellationToken) =>
        IPAddress.TryParse(host.Trim('[', ']'), out var literal) ? [literal] : await Dns.GetHostAddressesAsync(host, cancellationToken);

    private sealed class ErrorFeature(ForwarderError error, Exception? exception) : IForwarderErrorFeature
    {
        public ForwarderError Error { get; } = error;

        public Exception? Exception { get; } = exception;
    }

    /// <summary>Marks a failure on the client side of the copy, so it is not blamed on the backend.</summary>
    private sealed class ClientWriteException(Exception inner) : IOException(inner.Message, inner);
}
