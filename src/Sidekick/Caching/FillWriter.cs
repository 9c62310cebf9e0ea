namespace Sidekick.Caching;

/// <summary>
/// Feeds one origin response's body into a fill, byte after byte from where that response starts in the object:
/// the whole body of a 200, or one range of a 206 combined with others (RFC 9111 §3.4). A whole body that goes
/// wrong gives the fill up; a range that goes wrong only stops adding to it, since the bytes it did write are the
/// object's (same strong ETag) and other ranges may still complete it. A whole body's feeding may be handed off
/// midway to a response that brings the rest (<see cref="HandOff"/>).
/// </summary>
internal sealed class FillWriter(CacheFill fill, long start, long end, bool whole)
{
    // Offer, Lend and HandOff take it: once HandOff returns, this response adds nothing more to the fill. The
    // response's own copy loop is the only other taker, so it is uncontended but at a hand-off.
    private readonly Lock _feeding = new();
    private long _position = start;
    private bool _handedOff;
    private bool _ended;

    public CacheFill Fill => fill;

    /// <summary>Where the next byte goes: the object's bytes before it are in the fill (or on their way to its spool).</summary>
    public long Position => Volatile.Read(ref _position);

    /// <summary>This response brings the whole body (or, after a hand-off, all the rest of it), not one range.</summary>
    public bool IsWhole => whole;

    /// <summary>Another response feeds the fill from <see cref="Position"/> on (<see cref="HandOff"/>); once true, true for good.</summary>
    public bool HandedOff => Volatile.Read(ref _handedOff);

    /// <summary>This whole body's fill may go on without the response feeding it (<see cref="CacheFill.MayContinueFrom"/>).</summary>
    public bool MayContinue => whole && fill.MayContinueFrom(_position);

    /// <summary>Writes the next bytes of this response; false once nothing more of it will be kept.</summary>
    public bool Offer(ReadOnlySpan<byte> data)
    {
        lock (_feeding)
        {
            if (_handedOff)
            {
                return false;
            }

            if (_position + data.Length > end)
            {
                if (whole)
                {
                    fill.Abandon(FillAbandonReason.OriginIncomplete, "the origin sent more than its Content-Length");
                }

                return false;
            }

            if (!fill.Write(_position, data))
            {
                return false;
            }

            _position += data.Length;
            return true;
        }
    }

    /// <summary>
    /// Where the next bytes of this whole body may be received (<see cref="Forwarding.IExchangeObserver.LendBody"/>),
    /// never past its end; null for a range, or a fill that writes through the page cache.
    /// </summary>
    public System.Buffers.IMemoryOwner<byte>? Lend(long maxLength)
    {
        if (!whole)
        {
            return null;
        }

        lock (_feeding)
        {
            return _handedOff ? null : fill.Lend(Math.Min(maxLength, end - _position));
        }
    }

    /// <summary>Completes when the fill is ready for more bytes: the copy loop awaits it before it receives more.</summary>
    public ValueTask WhenWritable() => HandedOff ? default : fill.WhenWritable();

    /// <summary>
    /// Stops this whole body feeding the fill, between two of its writes, and returns the writer for the rest (from
    /// <see cref="Position"/> to the end), which another response is to bring; null when the fill may not go on that
    /// way (<see cref="MayContinue"/>) or this body already ended. The spool's current buffer is moved first where the
    /// client connection of this response cannot write: part of it may be lent to that connection's output pipe, which
    /// goes on receiving this response's next bytes there.
    /// </summary>
    public FillWriter? HandOff()
    {
        lock (_feeding)
        {
            if (_handedOff || _ended || !MayContinue)
            {
                return null;
            }

            Volatile.Write(ref _handedOff, true);
            fill.Unlend();
            return new FillWriter(fill, _position, end, whole: true);
        }
    }

    /// <summary>This response will not be completed (a retry brought another head, or no backend answered).</summary>
    public void Void(string why)
    {
        if (whole && Retire())
        {
            fill.Abandon(FillAbandonReason.OriginIncomplete, why);
        }
    }

    /// <summary>
    /// This response's body is over (or its client left): no hand-off after this. False when one came first: the fill
    /// is then another response's to end.
    /// </summary>
    public bool Retire()
    {
        lock (_feeding)
        {
            _ended = true;
            return !_handedOff;
        }
    }

    /// <summary>
    /// The response's body ended. A whole body completes the fill (its upload finishes in the background when every
    /// announced byte came, else the fill is given up); a range has already added what it wrote. Nothing after a
    /// hand-off.
    /// </summary>
    public void End(bool clientGone)
    {
        if (whole && Retire())
        {
            _ = fill.Complete(clientGone);
        }
    }
}
