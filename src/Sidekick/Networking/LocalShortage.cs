using System.Net.Sockets;

namespace Sidekick.Networking;

/// <summary>Where a socket could not be had.</summary>
internal enum ShortageSite
{
    /// <summary>Accepting a client's connection: it waits in the kernel's queue while accept backs off.</summary>
    Accept,

    /// <summary>Connecting to a backend for a request: the client gets a 503, the backend's state is not touched.</summary>
    Backend,

    /// <summary>A health probe: not sent, and the backend keeps the state it had.</summary>
    Probe,
}

/// <summary>
/// The process ran short of what every socket needs: descriptors (EMFILE, ENFILE: the open-files limit) or kernel
/// memory for sockets (ENOBUFS, ENOMEM; epoll_ctl's ENOMEM and ENOSPC on sidekick's event loops). Such a failure is
/// sidekick's own, not a backend's or a client's: it must not mark backends down (every backend would fail the same
/// way, and stay down after the shortage ends), nor spin an accept loop on a listening socket that stays readable.
/// Counted by site for the metrics, and told to the log at most once per <see cref="LinePeriod"/> for each site, with
/// how many more came there since its last line.
/// </summary>
internal sealed class LocalShortage(TimeProvider time)
{
    /// <summary>How often a shortage is told to the log at most: thousands of requests can meet it in a second.</summary>
    public static readonly TimeSpan LinePeriod = TimeSpan.FromSeconds(10);

    private static readonly int Sites = Enum.GetValues<ShortageSite>().Length;
    private readonly long[] _counts = new long[Sites];
    private readonly Lock _lineLock = new();
    private readonly long[] _lastLine = new long[Sites]; // timestamp of each site's last line; 0 before its first
    private readonly long[] _sinceLine = new long[Sites]; // shortages met at each site since its last line, not told

    /// <summary>A line is due: the site, the error, and how many more shortages came there since its last line.</summary>
    public event Action<ShortageSite, SocketError, long>? Met;

    /// <summary>Shortages met so far at <paramref name="site"/>.</summary>
    public long Count(ShortageSite site) => Interlocked.Read(ref _counts[(int)site]);

    /// <summary>Whether <paramref name="exception"/> or one it wraps is a shortage; its error when it is.</summary>
    public static bool Find(Exception? exception, out SocketError error)
    {
        for (var current = exception; current is not null; current = current.InnerException)
        {
            if (current is SocketException socket && Is(socket.SocketErrorCode))
            {
                error = socket.SocketErrorCode;
                return true;
            }
        }

        error = default;
        return false;
    }

    /// <summary>The site as the metric's label and the JSON log line's During name it.</summary>
    public static string Label(ShortageSite site) => site switch
    {
        ShortageSite.Accept => "accept",
        ShortageSite.Backend => "backend",
        _ => "probe",
    };

    public static bool Is(SocketError error) => error is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable;

    /// <summary>What ran short, in an operator's words.</summary>
    public static string Describe(SocketError error) => error == SocketError.TooManyOpenSockets
        ? "out of file descriptors (" + DescriptorLimitText() + ")"
        : "out of kernel memory for sockets (ENOBUFS, ENOMEM)";

    public void Record(ShortageSite site, SocketError error)
    {
        var at = (int)site;
        Interlocked.Increment(ref _counts[at]);
        long more;
        lock (_lineLock)
        {
            var now = time.GetTimestamp();
            if (_lastLine[at] != 0 && time.GetElapsedTime(_lastLine[at], now) < LinePeriod)
            {
                _sinceLine[at]++;
                return;
            }

            _lastLine[at] = now;
            more = _sinceLine[at];
            _sinceLine[at] = 0;
        }

        Met?.Invoke(site, error, more);
    }

    private static string DescriptorLimitText() =>
        Hosting.DescriptorLimit.Current() is { } limit ? $"the open-files limit is {limit}" : "EMFILE";
}
