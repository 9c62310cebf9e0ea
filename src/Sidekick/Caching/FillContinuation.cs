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
/// version is no longer the origin's).
/// </summary>
internal sealed class FillContinuation : IExchangeObserver
{
    private readonly FillWriter _writer;
    private readonly long _from;
    private bool _taken;
    private bool _changed;
    private string _refusal = "no backend answered";

    private FillContinuation(FillWriter writer)
    {
        _writer = writer;
        _from = writer.Position;
    }

    /// <summary>
    /// Starts fetching the rest in the background. Call while the client's request is still there: its target and
    /// fields are copied now.
    /// </summary>
    public static void Start(HttpContext context, ICacheOrigin origin, FillWriter writer, CacheFills fills)
    {
        var request = StandInRequest.From(context);
        var continuation = new FillContinuation(writer);
        fills.Continued(writer.Fill, continuation._from);
        _ = Task.Run(() => continuation.RunAsync(origin, request));
    }

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
                Fill.Abandon(_changed ? FillAbandonReason.ObjectChanged : FillAbandonReason.ClientGone,
                    $"its client left after {_from.ToString(CultureInfo.InvariantCulture)} of {Fill.Length.ToString(CultureInfo.InvariantCulture)} bytes, " +
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
