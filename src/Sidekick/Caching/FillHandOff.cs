namespace Sidekick.Caching;

/// <summary>
/// Keeps a whole fill from going at its client's pace when other requests wait for it. A fill is fed by the response
/// of the client that missed, as fast as that client takes the bytes: a client that reads slowly (a throttled
/// download, a data loader that decodes as it reads) or stops reading held back every request reading the fill, each
/// of which would have been faster on its own from the origin, and a stalled one held them until the fill's
/// 30-second silence sent them to the origin. Every <see cref="Tick"/>, and when a request reading the fill begins to
/// wait for bytes the fill does not have yet, this looks at the time since it last looked (at least
/// <see cref="MinWindow"/> of it): when the client held the body back (its copy waited for the client to take bytes)
/// for at least half of it, and a request reading the fill waits, the fill is handed off: the client's response goes on to the
/// client alone, and the rest of the object is asked of the origin for the fill (<see cref="FillContinuation.StartRest"/>:
/// a Range from the first byte the fill lacks, of the same version), at the origin's pace. The rest then crosses the
/// origin's link twice (once to the slow client, once to the fill); it is asked only when a request is waiting for it.
/// </summary>
internal sealed class FillHandOff : IDisposable
{
    /// <summary>How often the client's share of the body's time is looked at.</summary>
    public static TimeSpan Tick { get; } = TimeSpan.FromMilliseconds(200);

    /// <summary>The shortest time a look judges the client's share by (a waiting request may come just after a tick).</summary>
    public static TimeSpan MinWindow { get; } = TimeSpan.FromMilliseconds(100);

    private readonly FillWriter _writer;
    private readonly StandInRequest _request;
    private readonly ICacheOrigin _origin;
    private readonly CacheFills _fills;
    private readonly TimeProvider _time;
    private readonly ITimer _timer;
    private readonly Lock _looking = new();
    private readonly Action _look; // one delegate, so that Dispose can take back the one it gave the fill
    private long _heldBefore; // timestamp ticks the client held the body in holds that ended
    private long _holdingSince; // when the current hold began (0: none)
    private long _heldAtTick;
    private long _lastTick;
    private int _over;

    private FillHandOff(FillWriter writer, StandInRequest request, ICacheOrigin origin, CacheFills fills, TimeProvider time)
    {
        _writer = writer;
        _request = request;
        _origin = origin;
        _fills = fills;
        _time = time;
        _lastTick = time.GetTimestamp();
        _look = Look;
        _timer = time.CreateTimer(static state => ((FillHandOff)state!).Look(), this, Tick, Tick);
        writer.Fill.ReaderWaits = _look;
    }

    /// <summary>
    /// Watches the whole fill <paramref name="writer"/> feeds from the response to <paramref name="context"/>'s request
    /// (whose target and fields are copied now, while it is there); null for a fill that could not be handed off (a
    /// range, or no strong ETag to ask for the rest of that version with).
    /// </summary>
    public static FillHandOff? Watch(HttpContext context, FillWriter writer, ICacheOrigin origin, CacheFills fills, TimeProvider time) =>
        writer.IsWhole && writer.Fill is { FromPieces: false, Entry.ETag: { } etag } && !etag.StartsWith("W/", StringComparison.Ordinal)
            ? new FillHandOff(writer, StandInRequest.From(context), origin, fills, time)
            : null;

    /// <summary>The body's copy waits for the client (true) or stopped waiting (false); from the copy loop.</summary>
    public void Holding(bool holding)
    {
        var now = _time.GetTimestamp();
        if (holding)
        {
            Volatile.Write(ref _holdingSince, now);
        }
        else if (Interlocked.Exchange(ref _holdingSince, 0) is var since and not 0)
        {
            Interlocked.Add(ref _heldBefore, now - since);
        }
    }

    /// <summary>The response ended: no hand-off after this.</summary>
    public void Dispose()
    {
        Volatile.Write(ref _over, 1);
        _timer.Dispose();
        Interlocked.CompareExchange(ref _writer.Fill.ReaderWaits, null, _look);
    }

    /// <summary>On a tick, or when a request reading the fill begins to wait (a look already under way is enough).</summary>
    private void Look()
    {
        if (Volatile.Read(ref _over) != 0 || !_looking.TryEnter())
        {
            return;
        }

        FillWriter? rest;
        try
        {
            var now = _time.GetTimestamp();
            if (_time.GetElapsedTime(_lastTick, now) < MinWindow)
            {
                return;
            }

            var since = Volatile.Read(ref _holdingSince);
            var held = Volatile.Read(ref _heldBefore) + (since != 0 ? now - since : 0);
            var share = (double)(held - _heldAtTick) / (now - _lastTick);
            (_heldAtTick, _lastTick) = (held, now);
            if (share < 0.5 || _writer.Fill.WaitingReaders == 0 || (rest = _writer.HandOff()) is null)
            {
                return;
            }
        }
        finally
        {
            _looking.Exit();
        }

        Dispose();
        FillContinuation.StartRest(_request, _origin, rest, _fills);
    }
}
