using System.Runtime.InteropServices;
using Sidekick.Platform;

namespace Sidekick.Caching;

/// <summary>
/// The large aligned buffers of the direct spool writers (<see cref="DirectBufferBudget.LargeBufferSize"/>), kept
/// from one fill to the next. A buffer allocated for each fill and freed after it is new memory every time: its
/// 512 pages faulted in and zeroed by the first copy into it, and unmapped again at the end. Measured per 64 MiB
/// miss on the 2-core bench machine: 1,026 page faults, about 8 ms of the copy loop's CPU, a third of what the miss
/// cost beyond the uncached proxy. The pool holds at most <see cref="Capacity"/> buffers (the most the large fills
/// use at once, so no more than a busy sidecar held anyway) and frees them all once none came back for
/// <see cref="SpoolFiles.Linger"/>: an idle sidecar holds no buffer. Smaller buffers are allocated and freed each time.
/// Only Linux writes the spool with O_DIRECT, so only Linux uses this.
/// </summary>
internal sealed unsafe class SpoolBufferPool : IDisposable
{
    /// <summary>The alignment O_DIRECT asks of addresses (the largest logical block size in use).</summary>
    public const int Alignment = 4096;

    private readonly Stack<nint> _buffers = new();
    private readonly Lock _lock = new();
    private readonly ITimer _trim;
    private bool _disposed;

    public SpoolBufferPool(int capacity, TimeProvider time)
    {
        Capacity = capacity;
        _trim = time.CreateTimer(_ => Trim(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>The most buffers kept.</summary>
    public int Capacity { get; }

    /// <summary>Buffers kept for the next fill.</summary>
    public int Kept
    {
        get
        {
            lock (_lock)
            {
                return _buffers.Count;
            }
        }
    }

    /// <summary>A buffer of <paramref name="size"/> bytes, aligned for O_DIRECT; give it back with <see cref="Return"/>.</summary>
    public nint Rent(int size)
    {
        if (size != DirectBufferBudget.LargeBufferSize)
        {
            return (nint)NativeMemory.AlignedAlloc((nuint)size, Alignment);
        }

        lock (_lock)
        {
            if (_buffers.TryPop(out var kept))
            {
                return kept;
            }
        }

        // Aligned to its own size and asked to be one huge page: each O_DIRECT write then pins and hands the device
        // one page, not 512 (the writer thread's CPU per 64 MiB miss: 12.6 ms with small pages, 5.8 ms with a huge
        // one). Where transparent huge pages are off the advice does nothing and the buffer works the same.
        var buffer = (nint)NativeMemory.AlignedAlloc((nuint)size, (nuint)size);
        _ = Libc.madvise(buffer, (nuint)size, Libc.MADV_HUGEPAGE);
        return buffer;
    }

    public void Return(nint buffer, int size)
    {
        if (size == DirectBufferBudget.LargeBufferSize)
        {
            lock (_lock)
            {
                if (!_disposed && _buffers.Count < Capacity)
                {
                    _buffers.Push(buffer);
                    // Freed together once none came back for this long: each return puts the trim off again.
                    _trim.Change(SpoolFiles.Linger, Timeout.InfiniteTimeSpan);
                    return;
                }
            }
        }

        NativeMemory.AlignedFree((void*)buffer);
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
        }

        _trim.Dispose();
        Trim();
    }

    private void Trim()
    {
        lock (_lock)
        {
            while (_buffers.TryPop(out var buffer))
            {
                NativeMemory.AlignedFree((void*)buffer);
            }
        }
    }
}
