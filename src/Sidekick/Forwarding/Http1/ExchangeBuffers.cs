using System.Buffers;

namespace Sidekick.Forwarding.Http1;

/// <summary>
/// The 4 KiB buffers of HTTP/1.1 exchanges (a request head, a response's receive buffer), kept free per thread.
/// An event loop runs many exchanges at once, so the shared array pool's slot for this thread (one array per size)
/// is nearly always empty when an exchange rents and full when it returns: every call went on to the pool's shared
/// partitions and their lock, 110-130 instructions a call and four calls a request (callgrind, 1 KiB x 32). A thread
/// keeps up to <see cref="Kept"/> free buffers here (128 KiB); past that, and for any other size, the shared pool
/// takes them.
/// </summary>
internal static class ExchangeBuffers
{
    /// <summary>Fits a typical response head plus a small body in one receive, and a typical request head.</summary>
    public const int Size = 4 * 1024;

    private const int Kept = 32;

    [ThreadStatic]
    private static byte[]?[]? t_free;

    [ThreadStatic]
    private static int t_count;

    /// <summary>Free buffers this thread keeps.</summary>
    internal static int KeptOnThisThread => t_count;

    public static byte[] Rent()
    {
        var count = t_count;
        if (count > 0 && t_free is { } free)
        {
            t_count = --count;
            var buffer = free[count]!;
            free[count] = null;
            return buffer;
        }

        return ArrayPool<byte>.Shared.Rent(Size);
    }

    /// <summary>Takes back a buffer from <see cref="Rent"/>, or any array of the shared pool (which gets it).</summary>
    public static void Return(byte[] buffer)
    {
        var count = t_count;
        if (buffer.Length == Size && count < Kept)
        {
            (t_free ??= new byte[]?[Kept])[count] = buffer;
            t_count = count + 1;
            return;
        }

        ArrayPool<byte>.Shared.Return(buffer);
    }
}
