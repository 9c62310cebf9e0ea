using Sidekick.Forwarding;

namespace Sidekick.Caching;

/// <summary>
/// The cache's view of one exchange with the origin, made through the normal forwarding path: it notes the
/// status and header values the origin answered with, feeds a storable response to a fill as it streams
/// to the client, and takes over the answers the cache serves itself (a 304 to its conditional request, an
/// error it may hide behind a stale entry, anything in a background revalidation with no client to send to).
/// </summary>
internal sealed class OriginAnswer : IExchangeObserver
{
    private readonly Func<HttpContext, CacheFill?>? _startFill;
    private readonly Func<int, bool> _takeOver;
    private CacheFill? _fill;

    /// <param name="startFill">Creates the fill for a storable response; null stores nothing.</param>
    /// <param name="takeOver">Which statuses the cache answers itself instead of passing them to the client.</param>
    public OriginAnswer(Func<HttpContext, CacheFill?>? startFill, Func<int, bool> takeOver)
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

    /// <summary>The fill fed by this answer, while it may still complete.</summary>
    public CacheFill? Fill => _fill is { Abandoned: false } fill ? fill : null;

    public bool OnResponseHead(HttpContext context)
    {
        // A retry can bring a second head: the first attempt's fill is void.
        _fill?.Abandon(FillAbandonReason.OriginIncomplete, "a retry brought another response");
        _fill = null;
        Status = context.Response.StatusCode;
        if (_takeOver(Status))
        {
            TookOver = true;
            Headers = AllHeaders(context.Response.Headers);
            return false;
        }

        TookOver = false;
        _fill = _startFill?.Invoke(context);
        HeadSeen?.Invoke(_fill);
        return true;
    }

    public bool OnNoAnswer(HttpContext context)
    {
        _fill?.Abandon(FillAbandonReason.OriginIncomplete, "no backend answered");
        _fill = null;
        Status = 0;
        TookOver = _takeOver(0);
        Headers = [];
        return TookOver;
    }

    public void OnBody(ReadOnlySpan<byte> data)
    {
        if (_fill is { } fill && !fill.Offer(data))
        {
            _fill = null;
        }
    }

    /// <summary>
    /// Ends the fill after the exchange: its upload goes on in the background and commits only when every
    /// announced byte came. Returns the fill (null when nothing is being stored).
    /// </summary>
    public CacheFill? Finish(HttpContext context)
    {
        if (_fill is not { } fill)
        {
            return null;
        }

        _fill = null;
        _ = fill.Complete(clientGone: context.RequestAborted.IsCancellationRequested);
        return fill;
    }

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
