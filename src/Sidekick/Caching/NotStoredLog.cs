namespace Sidekick.Caching;

/// <summary>
/// Which answers not stored are worth a log line, and how often: those an operator can act on (a limit to raise, an
/// origin that sends no Content-Length), at most one line per reason per <see cref="Interval"/>, the next one saying
/// how many were not logged in between. The metric counts every one.
/// </summary>
internal sealed class NotStoredLog(TimeProvider time)
{
    public static TimeSpan Interval { get; } = TimeSpan.FromMinutes(1);

    private readonly Lock _gate = new();
    private readonly long?[] _lastLine = new long?[Enum.GetValues<NotStoredReason>().Length];
    private readonly long[] _unlogged = new long[Enum.GetValues<NotStoredReason>().Length];

    public static bool IsLogged(NotStoredReason reason) =>
        reason is NotStoredReason.TooLarge or NotStoredReason.HeadersTooLarge or NotStoredReason.FillsBusy or NotStoredReason.UnknownLength or
            NotStoredReason.UnkeyedHeader or NotStoredReason.CustomerKey;

    /// <summary>Whether this one gets a line now; <paramref name="unlogged"/> is how many of its reason did not since the last.</summary>
    public bool Due(NotStoredReason reason, out long unlogged)
    {
        unlogged = 0;
        if (!IsLogged(reason))
        {
            return false;
        }

        var now = time.GetTimestamp();
        lock (_gate)
        {
            if (_lastLine[(int)reason] is { } last && time.GetElapsedTime(last, now) < Interval)
            {
                _unlogged[(int)reason]++;
                return false;
            }

            _lastLine[(int)reason] = now;
            unlogged = _unlogged[(int)reason];
            _unlogged[(int)reason] = 0;
            return true;
        }
    }
}
