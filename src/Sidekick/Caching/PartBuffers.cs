using System.Collections.Concurrent;

namespace Sidekick.Caching;

/// <summary>
/// Part buffers of exactly the part size, reused across fills. The shared array pool would round a 5 MiB
/// request up to 8 MiB, so fills would hold 60 % more memory than the bound the configuration states.
/// </summary>
internal sealed class PartBuffers(int partSize, int retain)
{
    private readonly ConcurrentQueue<byte[]> _free = new();

    public int PartSize { get; } = partSize;

    public byte[] Rent() => _free.TryDequeue(out var buffer) ? buffer : GC.AllocateUninitializedArray<byte>(PartSize);

    public void Return(byte[] buffer)
    {
        // Keep what concurrent fills need at most; beyond that let the collector have it.
        if (_free.Count < retain)
        {
            _free.Enqueue(buffer);
        }
    }
}
