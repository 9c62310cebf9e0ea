using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;

namespace Sidekick.Forwarding;

/// <summary>
/// Counts the body bytes of one exchange in both directions (for Rx/Tx statistics, upstream §8.4), notes
/// when the first response byte went out, and can keep the start of an error body for the debug trace.
/// The request body stream is wrapped at once; the response side is handed to the plain HTTP/1.1 forwarder
/// directly (<see cref="Response"/>) and stands in for the server's response body feature only when something
/// writes through the HttpContext (YARP, a resumed download): <see cref="Install"/>. Replacing a feature
/// makes every feature reference ASP.NET cached for the request fetch again, a cost the plain path skips.
/// One meter (with its streams and download watch) is kept per connection, or per HTTP/2 stream, in the
/// state Kestrel keeps across the requests it carries: the exchanges on it take turns, so none allocates one.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "The wrappers pass through the server-owned body streams, which the server disposes.")]
internal sealed class ExchangeMeter : IDisposable
{
    public const int MaxCapturedBody = 64 * 1024;

    // The reason phrase's length for every status code below 600: a table read instead of a dictionary lookup per request.
    private static readonly int[] ReasonLengths = Enumerable.Range(0, 600).Select(status => ReasonPhrases.GetReasonPhrase(status).Length).ToArray();

    /// <summary>The key of the kept meter in a connection's persistent state.</summary>
    private static readonly object StateKey = new();

    private readonly CountingReadStream _request = new();
    private readonly CountingWriteStream _response = new();
    private HttpContext _context = null!;
    private bool _busy;
    private IHttpRequestLifetimeFeature? _lifetime;
    private IHttpRequestLifetimeFeature? _serverLifetime;
    private bool _installed;

    private ExchangeMeter()
    {
    }

    /// <summary>The download watch kept with this meter (see <see cref="DownloadResume.Watch"/>).</summary>
    internal DownloadResume? KeptResume { get; set; }

    /// <summary>The path the last attempt took and why (set by the forwarder), for the trace record.</summary>
    public PathChoice? Path { get; set; }

    /// <summary>Who watches this exchange's response (the cache), or null; see <see cref="IExchangeObserver"/>.</summary>
    public IExchangeObserver? Observer
    {
        get => _response.Observer;
        set => _response.Observer = value;
    }

    /// <summary>
    /// Starts metering an exchange with the meter kept for the connection, or a new one when the server keeps
    /// no state or the kept one is still in use. Dispose it when the exchange is over.
    /// </summary>
    /// <param name="firstByteClock">Notes when the first body byte went out (for traces); null skips the clock read.</param>
    public static ExchangeMeter Begin(HttpContext context, TimeProvider? firstByteClock, bool captureErrorBody)
    {
        var meter = Kept(context) ?? new ExchangeMeter();
        meter._busy = true;
        meter._context = context;
        meter._installed = false;
        meter._lifetime = null;
        meter._serverLifetime = null;
        meter.Path = null;
        meter.Observer = null;
        // A request that cannot have a body (a GET without Content-Length or chunking) reads none: no wrapper.
        meter.RequestMayHaveBody = context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody != false;
        if (meter.RequestMayHaveBody)
        {
            meter._request.Begin(context.Request.Body);
            context.Request.Body = meter._request;
        }

        meter._response.Begin(context.Features.GetRequiredFeature<IHttpResponseBodyFeature>(), context.Response, firstByteClock, captureErrorBody);
        return meter;
    }

    private static ExchangeMeter? Kept(HttpContext context)
    {
        if (context.Features.Get<IPersistentStateFeature>()?.State is not { } state)
        {
            return null;
        }

        if (state.TryGetValue(StateKey, out var kept))
        {
            return kept is ExchangeMeter { _busy: false } free ? free : null;
        }

        var meter = new ExchangeMeter();
        state[StateKey] = meter;
        return meter;
    }

    /// <summary>Whether the server said the request may have content (a GET without Content-Length or chunking may not).</summary>
    public bool RequestMayHaveBody { get; private set; }

    /// <summary>The response body, counted, for a forwarder that writes below the HttpContext.</summary>
    public IMeteredResponseBody Response => _response;

    /// <summary>The server's lifetime feature that <see cref="Install"/> put the stand-in in front of; null until then.</summary>
    public IHttpRequestLifetimeFeature? ServerLifetime => _serverLifetime;

    /// <summary>A stand-in for the request's lifetime feature, installed together with the meter.</summary>
    public void InstallWith(IHttpRequestLifetimeFeature lifetime) => _lifetime = lifetime;

    /// <summary>
    /// Puts the meter (and the stand-ins given to <see cref="InstallWith"/>) in front of the server's features,
    /// so that whatever writes through the HttpContext from now on is counted. Both features are replaced
    /// together: ASP.NET refetches its cached feature references once, not once per replacement.
    /// </summary>
    public void Install()
    {
        if (_installed)
        {
            return;
        }

        _installed = true;
        _context.Features.Set<IHttpResponseBodyFeature>(_response);
        if (_lifetime is not null)
        {
            _serverLifetime = _context.Features.Get<IHttpRequestLifetimeFeature>();
            _context.Features.Set(_lifetime);
        }
    }

    /// <summary>
    /// Ends the exchange: the request gets back the body stream and features it had before
    /// <see cref="Begin"/>, so a later exchange in the same request wraps the server's, not this meter's,
    /// and a captured error body is let go rather than kept with an idle connection.
    /// </summary>
    public void Dispose()
    {
        _response.ReleaseCaptured();
        if (Observer is not null)
        {
            _context.Features.Set<IExchangeObserver>(null);
            Observer = null;
        }

        if (RequestMayHaveBody && ReferenceEquals(_context.Request.Body, _request))
        {
            _context.Request.Body = _request.Inner;
        }

        if (_installed)
        {
            _context.Features.Set(_response.Server);
            if (_lifetime is not null)
            {
                _context.Features.Set(_serverLifetime);
            }
        }

        _busy = false;
    }

    public long RequestBodyBytes => RequestMayHaveBody ? _request.BytesRead : 0;

    public long ResponseBodyBytes => _response.Written;

    /// <summary>Timestamp (<see cref="TimeProvider.GetTimestamp"/>) of the first body byte sent; 0 if none or not timed.</summary>
    public long FirstByteTimestamp => _response.FirstWriteTimestamp;

    public string? CapturedErrorBody => _response.Captured;

    /// <summary>The request's header bytes, as the forwarder counted them or (if it did not) counted now.</summary>
    public long RequestHeaderBytesOf(HttpRequest request) =>
        _response.CountedRequestHeaderBytes is >= 0 and var counted ? counted : RequestHeaderBytes(request);

    /// <summary>The client a trace names for this exchange's request (<see cref="Observability.TraceSink.ClientOf(HttpContext)"/>), from the fields the forwarder found when it did.</summary>
    public string ClientOf(HttpContext context) =>
        _response.ClientFields is { } fields ? Observability.TraceSink.ClientOf(context, fields) : Observability.TraceSink.ClientOf(context);

    /// <summary>
    /// Header bytes as upstream counts them: name and value of every header, Host included once (upstream
    /// adds the host to a header map that lacks it; Kestrel's holds it).
    /// </summary>
    public static long RequestHeaderBytes(HttpRequest request)
    {
        long total = 0;
        foreach (var (name, values) in request.Headers)
        {
            foreach (var value in values)
            {
                total += name.Length + (value?.Length ?? 0);
            }
        }

        return total;
    }

    /// <summary>Status line and one line per response header with its first value, as upstream approximates.</summary>
    public static long ResponseHeaderBytes(HttpResponse response)
    {
        var status = response.StatusCode;
        long total = 4 + ((uint)status < (uint)ReasonLengths.Length ? ReasonLengths[status] : ReasonPhrases.GetReasonPhrase(status).Length) + 1;
        foreach (var (name, values) in response.Headers)
        {
            total += name.Length + 2 + (values.Count > 0 ? values[0]?.Length ?? 0 : 0) + 1;
        }

        return total;
    }

    private sealed class CountingReadStream : Stream
    {
        private Stream _inner = Null;
        private long _read;

        public Stream Inner => _inner;

        public long BytesRead => Volatile.Read(ref _read);

        public void Begin(Stream inner)
        {
            _inner = inner;
            _read = 0;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = _inner.Read(buffer, offset, count);
            _read += n;
            return n;
        }

        [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder<>))]
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            var n = await _inner.ReadAsync(buffer, cancellationToken);
            _read += n;
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush() => _inner.Flush();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private sealed class CountingWriteStream : Stream, IMeteredResponseBody, IHttpResponseBodyFeature
    {
        private IHttpResponseBodyFeature _server = null!;
        private HttpResponse _response = null!;
        private TimeProvider? _firstByteClock;
        private bool _captureErrorBody;
        private Stream _inner = Null;
        private long _written;
        private StringBuilder? _captured;
        private PipeWriter? _writer;

        public void Begin(IHttpResponseBodyFeature serverBody, HttpResponse serverResponse, TimeProvider? clock, bool capture)
        {
            _server = serverBody;
            _response = serverResponse;
            _firstByteClock = clock;
            _captureErrorBody = capture;
            _inner = serverBody.Stream;
            _written = 0;
            _captured = null;
            _writer = null;
            FirstWriteTimestamp = 0;
            CountedRequestHeaderBytes = -1;
            ClientFields = null;
        }

        public long Written => Volatile.Read(ref _written);

        /// <summary>The server's response body feature this stream stands in for.</summary>
        public IHttpResponseBodyFeature Server => _server;

        public void ReleaseCaptured() => _captured = null;

        public long FirstWriteTimestamp { get; private set; }

        public string? Captured => _captured?.ToString();

        public PipeWriter ServerWriter => _server.Writer;

        public Stream Body => this;

        public long CountedRequestHeaderBytes { get; private set; } = -1;

        public IExchangeObserver? Observer { get; set; }

        /// <summary>The request's client address fields as the forwarder found them; null when it did not.</summary>
        public Observability.ClientAddressFields? ClientFields { get; private set; }

        public void CountedRequestHeaders(long bytes, in Observability.ClientAddressFields clientFields)
        {
            CountedRequestHeaderBytes = bytes;
            ClientFields = clientFields;
        }

        public void Wrote(ReadOnlySpan<byte> data)
        {
            Observe(data);
            _written += data.Length;
        }

        public ValueTask WhenObserverReady() => Observer is { } observer ? observer.WhenBodyWritable() : default;

        Stream IHttpResponseBodyFeature.Stream => this;

        // Rarely used (the proxy writes through the stream): created on demand, writing through this stream.
        PipeWriter IHttpResponseBodyFeature.Writer => _writer ??= CreateWriter();

        void IHttpResponseBodyFeature.DisableBuffering() => _server.DisableBuffering();

        Task IHttpResponseBodyFeature.StartAsync(CancellationToken cancellationToken) => _server.StartAsync(cancellationToken);

        Task IHttpResponseBodyFeature.SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken) =>
            SendFileFallback.SendFileAsync(this, path, offset, count, cancellationToken);

        async Task IHttpResponseBodyFeature.CompleteAsync()
        {
            if (_writer is not null)
            {
                await _writer.CompleteAsync();
            }

            await _server.CompleteAsync();
        }

        private PipeWriter CreateWriter()
        {
            var writer = PipeWriter.Create(this, new StreamPipeWriterOptions(leaveOpen: true));
            _response.OnCompleted(static w => ((PipeWriter)w).CompleteAsync().AsTask(), writer);
            return writer;
        }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush() => _inner.Flush();
        public override Task FlushAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        [AsyncMethodBuilder(typeof(SharedPoolValueTaskBuilder))]
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Observe(buffer.Span);
            var write = _inner.WriteAsync(buffer, cancellationToken);
            if (write.IsCompleted || Observer is not { } holder)
            {
                await write;
            }
            else
            {
                holder.ClientHolding(true);
                try
                {
                    await write;
                }
                finally
                {
                    holder.ClientHolding(false);
                }
            }

            _written += buffer.Length;
            if (Observer is { } observer)
            {
                // A fill whose spool writer is behind: the copy loop (YARP's, or the chunked and until-close loops of
                // the HTTP/1.1 forwarder) waits here, before it receives more, instead of blocking its thread.
                await observer.WhenBodyWritable();
            }
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        private void Observe(ReadOnlySpan<byte> data)
        {
            Observer?.OnBody(data);
            if (_firstByteClock is not null && FirstWriteTimestamp == 0 && data.Length > 0)
            {
                FirstWriteTimestamp = _firstByteClock.GetTimestamp();
            }

            if (_captureErrorBody && _response.StatusCode >= 400 && _written < MaxCapturedBody)
            {
                _captured ??= new StringBuilder();
                _captured.Append(Encoding.UTF8.GetString(data[..(int)Math.Min(data.Length, MaxCapturedBody - _written)]));
            }
        }
    }
}
