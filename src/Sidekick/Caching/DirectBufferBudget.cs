namespace Sidekick.Caching;

/// <summary>
/// The size of the buffers a fill's direct spool writer gets. Large writes cost the writer a fraction of the CPU of
/// small ones (measured per GiB on this project's 2-core VM: 256 KiB writes 20-25 CPU ticks of the writer thread and
/// more of the copy loop's, 2 MiB writes 4-8), but memory is what a sidecar must not spend: the first few fills at
/// once get large buffers, any fill beyond them small ones, so twenty fills at once hold what they held before plus
/// the few large ones.
/// </summary>
internal sealed class DirectBufferBudget(int largeFills)
{
    /// <summary>A buffer of one of the first fills at once (two of them per fill).</summary>
    public const int LargeBufferSize = 2 * 1024 * 1024;

    /// <summary>A buffer of any fill beyond those.</summary>
    public const int SmallBufferSize = 256 * 1024;

    /// <summary>Fills that may hold large buffers at once: 16 MiB in all.</summary>
    public const int DefaultLargeFills = 4;

    private int _large;

    /// <summary>The buffer size for a fill that starts now; give it back with <see cref="Return"/> when the fill ends.</summary>
    public int Take()
    {
        if (Interlocked.Increment(ref _large) <= largeFills)
        {
            return LargeBufferSize;
        }

        Interlocked.Decrement(ref _large);
        return SmallBufferSize;
    }

    public void Return(int bufferSize)
    {
        if (bufferSize == LargeBufferSize)
        {
            Interlocked.Decrement(ref _large);
        }
    }
}
