namespace Sidekick.Caching;

/// <summary>
/// Feeds one origin response's body into a fill, byte after byte from where that response starts in the object:
/// the whole body of a 200, or one range of a 206 combined with others (RFC 9111 §3.4). A whole body that goes
/// wrong gives the fill up; a range that goes wrong only stops adding to it, since the bytes it did write are the
/// object's (same strong ETag) and other ranges may still complete it.
/// </summary>
internal sealed class FillWriter(CacheFill fill, long start, long end, bool whole)
{
    private long _position = start;

    public CacheFill Fill => fill;

    /// <summary>Where the next byte goes: the object's bytes before it are in the fill (or on their way to its spool).</summary>
    public long Position => _position;

    /// <summary>This whole body's fill may go on without the response feeding it (<see cref="CacheFill.MayContinueFrom"/>).</summary>
    public bool MayContinue => whole && fill.MayContinueFrom(_position);

    /// <summary>Writes the next bytes of this response; false once nothing more of it will be kept.</summary>
    public bool Offer(ReadOnlySpan<byte> data)
    {
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

    /// <summary>
    /// Where the next bytes of this whole body may be received (<see cref="Forwarding.IExchangeObserver.LendBody"/>),
    /// never past its end; null for a range, or a fill that writes through the page cache.
    /// </summary>
    public System.Buffers.IMemoryOwner<byte>? Lend(long maxLength) => whole ? fill.Lend(Math.Min(maxLength, end - _position)) : null;

    /// <summary>Completes when the fill is ready for more bytes: the copy loop awaits it before it receives more.</summary>
    public ValueTask WhenWritable() => fill.WhenWritable();

    /// <summary>This response will not be completed (a retry brought another head, or no backend answered).</summary>
    public void Void(string why)
    {
        if (whole)
        {
            fill.Abandon(FillAbandonReason.OriginIncomplete, why);
        }
    }

    /// <summary>
    /// The response's body ended. A whole body completes the fill (its upload finishes in the background when every
    /// announced byte came, else the fill is given up); a range has already added what it wrote.
    /// </summary>
    public void End(bool clientGone)
    {
        if (whole)
        {
            _ = fill.Complete(clientGone);
        }
    }
}
