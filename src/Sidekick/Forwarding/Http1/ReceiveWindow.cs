namespace Sidekick.Forwarding.Http1;

/// <summary>
/// How much each receive of a long response body asks the backend socket for. Every receive-and-flush round costs a
/// wake-up and two system calls whatever its size, so a large body is cheaper in large receives: measured through the
/// uncached proxy on this project's 2-core VM (Native AOT, nginx origin, curl, median of 3), 1 GiB took 1.17 s and 1.30
/// CPU s in 64 KiB receives, 0.97 s and 0.92 in up to 256 KiB, 0.82 s and 0.51 in up to 1 MiB (64 MiB: 0.071 and 0.063 s).
/// A receive's memory is the client connection's output pipe's (an array of the shared pool, held until sent), so the
/// window grows only for bodies with more than <see cref="GrowAbove"/> still to come (responses of a few MiB and less,
/// the benchmark rows among them, never grow), doubles from 64 KiB up to <see cref="Max"/> after each receive that
/// filled what it asked for, and takes what it grows by from a process-wide <see cref="ReceiveBudget"/>: a body the
/// budget refuses goes on at the size it has.
/// </summary>
internal struct ReceiveWindow(ReceiveBudget budget)
{
    public const int Initial = BackendConnection.LargeBufferSize;

    public const int Max = 1024 * 1024;

    /// <summary>Only a body with more than this still to come grows its window.</summary>
    public const long GrowAbove = 4 * 1024 * 1024;

    private int _size = Initial;

    /// <summary>What the next receive asks for (never more than the body has left: the caller's bound).</summary>
    public readonly int Size => _size;

    /// <summary>A receive got all it asked for: the window doubles, when the body is long and the budget allows.</summary>
    public void Filled(long remaining)
    {
        if (_size < Max && remaining > GrowAbove && budget.TryTake(_size))
        {
            _size *= 2;
        }
    }

    /// <summary>The body ended (or failed): what the window grew by goes back to the budget.</summary>
    public void Close()
    {
        budget.Return(_size - Initial);
        _size = Initial;
    }
}

/// <summary>The receive memory beyond 64 KiB per body that long bodies may hold at once, process-wide.</summary>
internal sealed class ReceiveBudget(long bytes)
{
    /// <summary>16 MiB: sixteen bodies at 1 MiB receives at once (more go on with smaller ones).</summary>
    public static ReceiveBudget Shared { get; } = new(16 * 1024 * 1024);

    private long _left = bytes;

    public long Left => Volatile.Read(ref _left);

    public bool TryTake(long amount)
    {
        if (Interlocked.Add(ref _left, -amount) >= 0)
        {
            return true;
        }

        Interlocked.Add(ref _left, amount);
        return false;
    }

    public void Return(long amount)
    {
        if (amount > 0)
        {
            Interlocked.Add(ref _left, amount);
        }
    }
}
