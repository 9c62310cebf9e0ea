using Sidekick.Hosting;
using Sidekick.Platform;

namespace Sidekick;

internal static class Program
{
    private const string InlineCompletions = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";
    private const string ArraysPerPartition = "DOTNET_SYSTEM_BUFFERS_SHAREDARRAYPOOL_MAXARRAYSPERPARTITION";

    public static Task<int> Main(string[] args)
    {
        // Run socket completions on the event threads (one per core) instead of handing each to the thread
        // pool: the request path never blocks, and the hand-off cost ~3 context switches per proxied request
        // (measured: 45-50 µs of CPU per 1 KiB request without, ~25 µs with). The runtime reads the variable
        // once, when the first socket is used, so it must be set before anything else; an operator's own
        // value (0 to turn it off) wins.
        SetUnlessSet(InlineCompletions, "1");

        // Every exchange in flight holds two pooled 4 KiB buffers (request head, response). The shared pool
        // keeps 32 per core by default, so with a few hundred connections busy most rents allocated and
        // most returns were dropped: 1k x 256 connections allocated 3.8 KB per request and ran ~55 gen1
        // collections in 5 s; with room for 512 per core, 1.4 KB and 2-4. Read once, at the pool's first use.
        SetUnlessSet(ArraysPerPartition, "512");

        NativeHeap.LimitArenas();

        // Every descriptor the operator's hard limit allows, as upstream's Go binary has (see DescriptorLimit); a
        // refusal (it cannot happen for an unprivileged raise up to the hard limit) leaves the limit as it was, and
        // process_max_fds shows it.
        DescriptorLimit.RaiseToHard();

        // nohup hands SIGHUP over ignored, a shell its background jobs SIGINT, and the runtime leaves an ignored
        // signal ignored when it sets up its own handling (on first use of the console), so this comes first.
        if (!OperatingSystem.IsWindows())
        {
            InheritedSignals.Unignore(Libc.SIGHUP);
            InheritedSignals.Unignore(Libc.SIGINT);
        }

        // The trace and log lines go to stdout's stream in batches, not through Console.Out, which flushes every 256
        // characters (see OutputQueue).
        return SidekickApp.RunAsync(args, Console.Out, Console.Error, Console.OpenStandardOutput());
    }

    /// <summary>An operator's own value wins.</summary>
    private static void SetUnlessSet(string name, string value)
    {
        if (Environment.GetEnvironmentVariable(name) is null)
        {
            Environment.SetEnvironmentVariable(name, value);
        }
    }
}
