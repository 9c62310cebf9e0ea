using Sidekick.Cli;

namespace Sidekick.Networking;

/// <summary>
/// The process's event loops. Client and backend sockets are spread over them; a backend connection opened
/// while serving a client goes to that client's loop, so one exchange usually runs on one thread from
/// request to response.
/// </summary>
internal sealed class EventLoops
{
    /// <summary>Chooses the socket engine: <c>epoll</c> (sidekick's event loops, the default on Linux) or <c>dotnet</c>.</summary>
    public const string Variable = "SIDEKICK_IO";

    /// <summary>How many loops (threads) to run; by default half the cores, at least one.</summary>
    public const string ThreadsVariable = "SIDEKICK_IO_THREADS";

    private static readonly Lazy<EventLoops> s_shared = new(static () => new EventLoops(s_threads));
    private static int s_threads = Threads(null);
    private readonly EventLoop[] _loops;
    private uint _next;

    private EventLoops(int count)
    {
        _loops = new EventLoop[Math.Max(1, count)];
        for (var i = 0; i < _loops.Length; i++)
        {
            _loops[i] = new EventLoop(i);
        }
    }

    /// <summary>How many loops there are.</summary>
    public int Count => _loops.Length;

    /// <summary>The loops, started on first use.</summary>
    public static EventLoops Shared => s_shared.Value;

    /// <summary>
    /// The loops, started with <paramref name="threads"/> loops unless they run already (one set per process:
    /// in-process servers in tests share it).
    /// </summary>
    public static EventLoops SharedWith(int threads)
    {
        if (!s_shared.IsValueCreated)
        {
            s_threads = threads;
        }

        return s_shared.Value;
    }

    /// <summary>
    /// Whether sockets go through sidekick's event loops for the <paramref name="choice"/> made in
    /// <see cref="Variable"/> (null: the default). Throws for a value that is neither engine.
    /// </summary>
    public static bool Chosen(string? choice) => choice?.Trim().ToLowerInvariant() switch
    {
        null or "" or "epoll" => OperatingSystem.IsLinux(),
        "dotnet" => false,
        _ => throw new FatalException($"invalid {Variable} '{choice}': expected 'epoll' (the default on Linux) or 'dotnet'"),
    };

    /// <summary>
    /// The number of loops for <paramref name="value"/> of <see cref="ThreadsVariable"/> (null: the default).
    /// Half the cores by default: a sidecar shares its host with the client it serves (and, in the
    /// benchmark, with the load generator and the backend), and on two cores one loop answered 1 KiB and
    /// 64 KiB requests with less CPU and a shorter tail than two (bench/results-notes.md); a second loop only
    /// paid for 1 MiB bodies.
    /// </summary>
    public static int Threads(string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            return Math.Max(1, Environment.ProcessorCount / 2);
        }

        return int.TryParse(value.Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var threads) &&
               threads is >= 1 and <= 1024
            ? threads
            : throw new FatalException($"invalid {ThreadsVariable} '{value}': expected a number of threads from 1 to 1024");
    }

    /// <summary>The caller's own loop when it runs on one, otherwise the next in turn.</summary>
    public EventLoop Pick() =>
        EventLoop.Current ?? _loops[(int)(Interlocked.Increment(ref _next) % (uint)_loops.Length)];

    /// <summary>The next loop in turn (for accepted connections).</summary>
    public EventLoop Next() => _loops[(int)(Interlocked.Increment(ref _next) % (uint)_loops.Length)];
}
