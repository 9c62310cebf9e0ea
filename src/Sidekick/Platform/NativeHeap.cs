namespace Sidekick.Platform;

/// <summary>
/// The C library's heap, where OpenSSL keeps each TLS connection's state (~40 KB: the SSL object and its
/// record buffers). glibc gives every thread that allocates its own arena, up to eight per core, and frees
/// into the arena the memory came from; a freed connection's pages stay resident in whichever arena held it
/// until that arena's top shrinks. Under HTTP/2 over TLS (32 connections, three rounds of new ones) the
/// arenas grew 2.9 -> 4.3 -> 4.7 MB with the same number of connections open.
/// </summary>
internal static class NativeHeap
{
    private const int ArenaMaxOption = -8; // M_ARENA_MAX in malloc.h

    /// <summary>
    /// Arenas for the whole process. The threads that allocate are the event loops and the thread-pool workers
    /// that run TLS, and a malloc holds its arena's lock for well under a microsecond, so two arenas leave
    /// little to contend on while far fewer half-empty pages stay resident. MALLOC_ARENA_MAX still overrides it.
    /// </summary>
    private const int Arenas = 2;

    /// <summary>
    /// Caps the arenas. Call at start-up: glibc reads the cap when a thread first needs an arena and fixes its
    /// limit then, and the runtime's own threads may already have made one (three arenas in all, measured).
    /// </summary>
    public static void LimitArenas()
    {
        if (OperatingSystem.IsLinux() && Environment.GetEnvironmentVariable("MALLOC_ARENA_MAX") is null)
        {
            TryNative(static () => Libc.mallopt(ArenaMaxOption, Arenas));
        }
    }

    /// <summary>
    /// Gives the free pages inside every arena back to the kernel (not only those at an arena's top). A walk
    /// over the free chunks: run after bursts of closed connections, next to the heap compaction.
    /// </summary>
    public static void Trim()
    {
        if (OperatingSystem.IsLinux())
        {
            TryNative(static () => Libc.malloc_trim(0));
        }
    }

    // A C library without these (musl has no malloc_trim) only loses the saving.
    private static void TryNative(Func<int> call)
    {
        try
        {
            call();
        }
        catch (EntryPointNotFoundException)
        {
        }
        catch (DllNotFoundException)
        {
        }
    }
}
