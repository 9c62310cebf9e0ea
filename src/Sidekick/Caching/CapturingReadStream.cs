using Sidekick.Forwarding;

namespace Sidekick.Caching;

/// <summary>
/// A request body that keeps a copy of what the forwarder reads from it, up to a bound, as it passes: nothing is
/// buffered ahead of the backend or delayed. The copy's bytes are reserved in <paramref name="budget"/>, shared by all
/// the copies in progress, as they arrive (clients sending many large bodies at once cannot make the process hold
/// them all). Past the bound, or the budget, it only notes that it overflowed, and gives its bytes back.
/// </summary>
internal sealed class CapturingReadStream(Stream inner, int maxBytes, ReplayBudget budget) : Stream
{
    private readonly MemoryStream _copy = new();
    private long _reserved;

    public Stream Inner => inner;

    /// <summary>More was read than the bound: the copy is not the whole body.</summary>
    public bool Overflowed { get; private set; }

    /// <summary>What was read, while it stayed within the bound.</summary>
    public ArraySegment<byte> Captured => _copy.TryGetBuffer(out var buffer) ? buffer : default;

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override int Read(byte[] buffer, int offset, int count) => Keep(buffer.AsSpan(offset, inner.Read(buffer, offset, count)));

    public override int Read(Span<byte> buffer) => Keep(buffer[..inner.Read(buffer)]);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var read = await inner.ReadAsync(buffer, cancellationToken);
        return Keep(buffer.Span[..read]);
    }

    private int Keep(ReadOnlySpan<byte> read)
    {
        if (Overflowed || read.IsEmpty)
        {
            return read.Length;
        }

        if (_copy.Length + read.Length > maxBytes || !budget.TryReserve(read.Length))
        {
            Overflowed = true;
            Release(); // the partial copy is of no use
            return read.Length;
        }

        _reserved += read.Length;
        _copy.Write(read);
        return read.Length;
    }

    /// <summary>Lets the copy go and gives its bytes back to the budget.</summary>
    public void Release()
    {
        _copy.SetLength(0);
        _copy.Capacity = 0;
        budget.Release(_reserved);
        _reserved = 0;
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
