using System.Buffers;
using Sidekick.Forwarding;
using Yarp.ReverseProxy.Forwarder;

namespace Sidekick.Caching;

/// <summary>
/// The cache's view of one exchange with the origin, made through the normal forwarding path: it notes the
/// status and header values the origin answered with, feeds a storable response to a fill as it streams
/// to the client, and takes over the answers the cache serves itself (a 304 to its conditional request, an
/// error it may hide behind a stale entry, anything in a background revalidation with no client to send to).
/// </summary>
internal sealed class OriginAnswer : IExchangeObserver
{
    private readonly Func<HttpContext, FillWriter?>? _startFill;
    private readonly Func<int, bool> _takeOver;
    private FillWriter? _writer;
    private FillHandOff? _handOff;

    /// <param name="startFill">Starts (or, for a range, joins) the fill for a storable response; null stores nothing.</param>
    /// <param name="takeOver">Which statuses the cache answers itself instead of passing them to the client.</param>
    public OriginAnswer(Func<HttpContext, FillWriter?>? startFill, Func<int, bool> takeOver)
    {
        _startFill = startFill;
        _takeOver = takeOver;
    }

    /// <summary>The status of the origin's answer; 0 when none came (no backend up, or every attempt failed).</summary>
    public int Status { get; private set; }

    /// <summary>The answer was taken over: nothing was sent to the client.</summary>
    public bool TookOver { get; private set; }

    /// <summary>The header fields of a taken-over answer, values as the origin sent them.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Headers { get; private set; } = [];

    /// <summary>Called once the head is known: with the fill it started, or null when nothing is stored.</summary>
    public Action<CacheFill?>? HeadSeen { get; init; }

    /// <summary>
    /// Called in place of ending a whole fill whose client left while requests read its spool, when it may go on
    /// (<see cref="FillWriter.MayContinue"/>): given the writer, it fetches the rest (<see cref="FillContinuation"/>).
    /// </summary>
    public Action<FillWriter>? ContinueWithoutClient { get; init; }

    /// <summary>
    /// Watches a whole fill this answer feeds, to hand it off when the client holds it back while requests wait for it
    /// (<see cref="FillHandOff.Watch"/>); null: never handed off.
    /// </summary>
    public Func<HttpContext, FillWriter, FillHandOff?>? HandOffWhenHeldBack { get; init; }

    /// <summary>The fill fed by this answer, while it may still complete.</summary>
    public CacheFill? Fill => _writer?.Fill is { Abandoned: false } fill ? fill : null;

    public bool OnResponseHead(HttpContext context)
    {
        // A retry can bring a second head: the first attempt's body is void.
        StopWatching();
        _writer?.Void("a retry brought another response");
        _writer = null;
        Status = context.Response.StatusCode;
        if (_takeOver(Status))
        {
            TookOver = true;
            Headers = AllHeaders(context.Response.Headers);
            return false;
        }

        TookOver = false;
        _writer = _startFill?.Invoke(context);
        _handOff = _writer is { } writer && HandOffWhenHeldBack is { } watch ? watch(context, writer) : null;
        HeadSeen?.Invoke(_writer?.Fill);
        return true;
    }

    public bool OnNoAnswer(HttpContext context)
    {
        StopWatching();
        _writer?.Void("no backend answered");
        _writer = null;
        Status = 0;
        TookOver = _takeOver(0);
        Headers = [];
        return TookOver;
    }

    public void OnBody(ReadOnlySpan<byte> data)
    {
        // After a hand-off the writer is kept (it takes nothing more): the fill is still this answer's to report.
        if (_writer is { } writer && !writer.Offer(data) && !writer.HandedOff)
        {
            _writer = null;
        }
    }

    public IMemoryOwner<byte>? LendBody(long maxLength) => _writer?.Lend(maxLength);

    public ValueTask WhenBodyWritable() => _writer is { } writer ? writer.WhenWritable() : default;

    public void ClientHolding(bool holding) => _handOff?.Holding(holding);

    private void StopWatching()
    {
        _handOff?.Dispose();
        _handOff = null;
    }

    /// <summary>
    /// Ends the fill after the exchange: its upload goes on in the background and commits only when every
    /// announced byte came. Returns the fill (null when nothing is being stored). A fill handed off to a fetch of its
    /// rest is that fetch's to end.
    /// </summary>
    public CacheFill? Finish(HttpContext context)
    {
        StopWatching();
        if (_writer is not { } writer)
        {
            return null;
        }

        _writer = null;
        if (!writer.Retire())
        {
            return writer.Fill;
        }

        var clientGone = ClientLeft(context);
        if (clientGone && ContinueWithoutClient is { } carryOn && writer.MayContinue)
        {
            carryOn(writer);
        }
        else
        {
            writer.End(clientGone);
        }

        return writer.Fill;
    }

    /// <summary>
    /// Whether the body stopped because the client went away: the forwarder failed writing to it, or the request was
    /// aborted. The forwarder's own verdict comes first: the connection's close reaches RequestAborted through the
    /// thread pool, so a write that failed on a closed socket can end the exchange before the token is cancelled (a
    /// fill of a client that left was then counted as origin_incomplete).
    /// </summary>
    internal static bool ClientLeft(HttpContext context) =>
        context.Features.Get<IForwarderErrorFeature>()?.Error is ForwarderError.ResponseBodyClient or ForwarderError.ResponseBodyCanceled ||
        context.RequestAborted.IsCancellationRequested;

    private static KeyValuePair<string, string>[] AllHeaders(IHeaderDictionary headers)
    {
        var all = new List<KeyValuePair<string, string>>();
        foreach (var (name, values) in headers)
        {
            foreach (var value in values)
            {
                all.Add(new(name, value ?? ""));
            }
        }

        return [.. all];
    }
}
