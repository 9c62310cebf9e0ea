using System.Globalization;
using Sidekick.Forwarding;

namespace Sidekick.Caching;

/// <summary>
/// The rest of a whole fill whose client left while other requests read its spool. Those requests were cut where
/// the client left (their S3 clients then read the whole object again, from the origin). Now the origin is asked,
/// with the client's own request, for the bytes from where its body stopped (<c>Range: bytes=N-</c>) of the same
/// version and no other (<c>If-Match</c> with the fill's strong ETag), and they are written on into the fill, which
/// completes and is stored as if the client had stayed. Only a 206 that is exactly that rest of that version is
/// taken; any other answer gives the fill up as before (<c>client_gone</c>, or <c>object_changed</c> when the
/// version is no longer the origin's). The same fetches the rest of a fill whose client stayed but held it back while
/// requests waited for it (<see cref="StartRest"/>; given up as <c>client_too_slow</c> when the rest cannot be had).
/// </summary>
internal sealed class FillContinuation : IExchangeObserver
{
    private readonly FillWriter _writer;
    private readonly long _from;
    private readonly string _cause;
    private readonly FillAbandonReason _causeReason;
    private bool _taken;
    private bool _changed;
    private string _refusal = "no backend answered";

    private FillContinuation(FillWriter writer, string cause, FillAbandonReason causeReason)
    {
        _writer = writer;
        _from = writer.Position;
        _cause = cause;
        _causeReason = causeReason;
    }

    /// <summary>
    /// Starts fetching the rest in the background. Call while the client's request is still there: its target and
    /// fields are copied now.
    /// </summary>
    public static void Start(HttpContext context, ICacheOrigin origin, FillWriter writer, CacheFills fills)
    {
        var continuation = new FillContinuation(writer, "its client left", FillAbandonReason.ClientGone);
        fills.Continued(writer.Fill, continuation._from);
        continuation.Run(origin, StandInRequest.From(context));
    }

    /// <summary>
    /// Starts fetching, for the fill alone, the rest a client too slow for the requests waiting on its fill was
    /// handed off from (<see cref="FillHandOff"/>): <paramref name="rest"/> from its position, with
    /// <paramref name="request"/>, that client's request as it came.
    /// </summary>
    public static void StartRest(StandInRequest request, ICacheOrigin origin, FillWriter rest, CacheFills fills)
    {
        var continuation = new FillContinuation(rest, "its client held it back", FillAbandonReason.ClientTooSlow);
        fills.HandedOff(rest.Fill, continuation._from);
        continuation.Run(origin, request);
    }

    private void Run(ICacheOrigin origin, StandInRequest request) => _ = Task.Run(() => RunAsync(origin, request));

    private CacheFill Fill => _writer.Fill;

    private async Task RunAsync(ICacheOrigin origin, StandInRequest request)
    {
        try
        {
            await origin.ForwardAsync(request.ForRest(Fill.Entry.ETag!, _from), this);
        }
        catch (Exception ex)
        {
            _refusal = $"its exchange failed: {ex.Message}";
        }
        finally
        {
            if (_taken)
            {
                // Every announced byte came, or the fill is given up as an incomplete body (origin_incomplete).
                _writer.End(clientGone: false);
            }
            else
            {
                Fill.Abandon(_changed ? FillAbandonReason.ObjectChanged : _causeReason,
                    $"{_cause} after {_from.ToString(CultureInfo.InvariantCulture)} of {Fill.Length.ToString(CultureInfo.InvariantCulture)} bytes, " +
                    $"and the rest could not be had: {_refusal}");
            }
        }
    }

    public bool OnResponseHead(HttpContext context)
    {
        if (_writer.Position != _from)
        {
            // A retry's second head after bytes of the first were written: they cannot be taken back.
            _taken = false;
            _refusal = "a retry brought another response after part of the first";
            return false;
        }

        _taken = OriginRemainder.IsTheRest(context.Response, Fill.Entry, _from, Fill.Length - 1, out var refusal, out _changed);
        _refusal = refusal;
        // Nothing is copied to a client either way (there is none): the body is only written into the fill.
        return _taken;
    }

    public bool OnNoAnswer(HttpContext context) => true;

    public void OnBody(ReadOnlySpan<byte> data)
    {
        if (_taken && !_writer.Offer(data))
        {
            _taken = false;
            _refusal = "the fill stopped taking its bytes";
        }
    }

    public ValueTask WhenBodyWritable() => _taken ? _writer.WhenWritable() : default;
}
