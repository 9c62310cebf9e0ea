namespace Sidekick.Platform;

/// <summary>
/// Signal dispositions a process inherits from whoever started it. <c>nohup sidekick …</c> starts it with SIGHUP
/// ignored, a shell starts a background job (<c>sidekick … &amp;</c> in a script) with SIGINT ignored; an ignored
/// signal stays ignored across exec, and .NET's signal registration then never delivers it, so SIGHUP would
/// silently not reload. Go's <c>signal.Notify</c> installs its handler for SIGHUP and SIGINT whatever the inherited
/// disposition, so the Go sidekick reloads and stops on them; this restores that before sidekick registers its own
/// handlers.
/// </summary>
internal static unsafe class InheritedSignals
{
    /// <summary>
    /// Puts <paramref name="signal"/> back to its default disposition if it was inherited ignored. Any other
    /// disposition (the default, or a handler the runtime installed) is left as it is.
    /// </summary>
    public static void Unignore(int signal)
    {
        // Larger than any C library's struct sigaction (glibc's is 152 bytes on x86-64).
        var previous = stackalloc byte[512];
        if (Libc.sigaction(signal, null, previous) == 0 && *(nint*)previous == Libc.SIG_IGN)
        {
            Libc.signal(signal, Libc.SIG_DFL);
        }
    }
}
