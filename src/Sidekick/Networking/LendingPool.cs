using System.Buffers;
using System.IO.Pipelines;

namespace Sidekick.Networking;

/// <summary>
/// The memory pool of one client connection's output pipe, which can be handed, for one <c>GetMemory</c>, memory
/// that another part of the process owns: a cache fill's spool buffer at the body's next offset
/// (<see cref="Forwarding.IExchangeObserver.LendBody"/>). The response bytes the forwarder then receives from the
/// backend land where the fill keeps them and are sent to the client from there, so a MISS costs no copy more than an
/// uncached response (measured before: the copy into the spool's buffers was most of what a 64 MiB MISS took over
/// the uncached proxy). Otherwise it is the pool it wraps. Used only by the output pipe's writer, one response at a
/// time (HTTP/1.1), so an offer is never seen by another response's segment.
/// </summary>
internal sealed class LendingPool(MemoryPool<byte> inner) : MemoryPool<byte>
{
    private IMemoryOwner<byte>? _offer;

    /// <summary>
    /// Read by the pipe each time it needs a segment: while a loan is offered, large enough that the pipe asks this
    /// pool for it rather than renting an array of its own.
    /// </summary>
    public override int MaxBufferSize => _offer is { } offer ? Math.Max(offer.Memory.Length, inner.MaxBufferSize) : inner.MaxBufferSize;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (_offer is { } offer && minBufferSize <= offer.Memory.Length)
        {
            _offer = null;
            return offer;
        }

        return inner.Rent(minBufferSize);
    }

    /// <summary>
    /// <paramref name="writer"/>'s memory for at most <paramref name="sizeHint"/> bytes, with <paramref name="loan"/>
    /// offered as the pipe's next segment. When the pipe takes it, it disposes the loan once it has sent what was
    /// written there; when it does not (its current segment still has the room asked for, or the writer is not this
    /// pipe's: TLS, HTTP/2, a flush in progress), it is disposed here, and the caller sees memory elsewhere.
    /// </summary>
    public Memory<byte> GetMemory(PipeWriter writer, IMemoryOwner<byte> loan, int sizeHint)
    {
        _offer = loan;
        try
        {
            return writer.GetMemory(Math.Min(sizeHint, loan.Memory.Length));
        }
        finally
        {
            if (_offer is { } untaken)
            {
                _offer = null;
                untaken.Dispose();
            }
        }
    }

    protected override void Dispose(bool disposing)
    {
        // The wrapped pool is the listener's, shared by its connections.
    }
}
