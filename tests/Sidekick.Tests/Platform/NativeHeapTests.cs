using System.Runtime.InteropServices;
using Sidekick.Hosting;
using Sidekick.Platform;

namespace Sidekick.Tests.Platform;

public sealed class NativeHeapTests
{
    private const int Page = 4096;

    [Fact]
    public void Trim_gives_back_freed_pages_in_the_middle_of_the_heap()
    {
        // Blocks under glibc's mmap threshold (128 KiB) come from an arena (Marshal.AllocHGlobal is malloc). All
        // but the last are freed: they merge into free space below a block still in use, which free() alone
        // does not give back (it only shrinks an arena from its top).
        const int Blocks = 40, BlockSize = 96 * 1024;
        var ones = new byte[BlockSize];
        Array.Fill(ones, (byte)1);
        var blocks = new nint[Blocks];
        for (var i = 0; i < Blocks; i++)
        {
            blocks[i] = Marshal.AllocHGlobal(BlockSize);
            Marshal.Copy(ones, 0, blocks[i], BlockSize); // resident
        }

        try
        {
            for (var i = 0; i < Blocks - 1; i++)
            {
                Marshal.FreeHGlobal(blocks[i]);
            }

            var before = ResidentInteriorPages(blocks[..^1], BlockSize, out var pages);
            NativeHeap.Trim();
            var after = ResidentInteriorPages(blocks[..^1], BlockSize, out _);

            // Another thread of the test host may take a little of that free space meanwhile.
            Assert.True(before > pages * 9 / 10, $"{before} of {pages} freed pages were resident before the trim");
            Assert.True(after < pages / 10, $"{after} of {pages} freed pages were still resident after the trim");
        }
        finally
        {
            Marshal.FreeHGlobal(blocks[^1]);
        }
    }

    /// <summary>The blocks' pages but each one's first (where the allocator keeps its bookkeeping), as mincore sees them.</summary>
    private static int ResidentInteriorPages(nint[] blocks, int blockSize, out int pages)
    {
        var resident = 0;
        pages = 0;
        foreach (var block in blocks)
        {
            var first = (block + Page) & ~(nint)(Page - 1);
            var end = (block + blockSize) & ~(nint)(Page - 1);
            resident += ResidentPages.In(first, (nuint)(end - first), out var blockPages);
            pages += blockPages;
        }

        return resident;
    }
}
