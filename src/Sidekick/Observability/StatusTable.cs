using System.Globalization;
using System.Text;
using Sidekick.Cli;
using Sidekick.Topology;

namespace Sidekick.Observability;

/// <summary>
/// The live table shown on a terminal (upstream §8.5 columns plus requests per second, in-flight and the
/// active site), redrawn twice a second. One row per backend, sites in order, whatever their sizes.
/// </summary>
internal sealed class StatusTable(TopologyStore topology, TimeProvider time)
{
    private static readonly string[] Columns =
        ["SITE", "HOST", "STATUS", "CALLS", "FAILURES", "REQ/S", "IN-FLIGHT", "Rx", "Tx", "TOTAL DOWNTIME", "LAST DOWNTIME", "MIN LATENCY", "MAX LATENCY"];

    private readonly Dictionary<Backend, long> _lastCalls = [];
    private long _lastTick;

    /// <summary>Renders the table; rates are computed against the previous call.</summary>
    public string Render()
    {
        var now = time.GetTimestamp();
        var elapsed = _lastTick == 0 ? TimeSpan.Zero : time.GetElapsedTime(_lastTick, now);
        _lastTick = now;
        var snapshot = topology.Current;
        var rows = new List<string[]>();
        foreach (var site in snapshot.Sites)
        {
            foreach (var backend in site.Backends)
            {
                var health = backend.GetHealthSnapshot();
                var calls = backend.Stats.Calls;
                var rate = elapsed > TimeSpan.Zero && _lastCalls.TryGetValue(backend, out var before)
                    ? (calls - before) / elapsed.TotalSeconds
                    : 0;
                _lastCalls[backend] = calls;
                rows.Add(
                [
                    Ordinal(site.Number), backend.Name, health.IsUp ? (backend.IsEjected ? "EJECTED" : "UP") : "DOWN",
                    calls.ToString(CultureInfo.InvariantCulture), backend.Stats.Failures.ToString(CultureInfo.InvariantCulture),
                    rate.ToString("0.0", CultureInfo.InvariantCulture), backend.InFlight.ToString(CultureInfo.InvariantCulture),
                    ByteSize.FormatIec(backend.Stats.RxBytes), ByteSize.FormatIec(backend.Stats.TxBytes),
                    GoDuration.FormatRounded(health.TotalDowntime), GoDuration.FormatRounded(health.LastDowntime),
                    GoDuration.FormatRounded(backend.Stats.MinLatency), GoDuration.FormatRounded(backend.Stats.MaxLatency),
                ]);
            }
        }

        var widths = Columns.Select((c, i) => Math.Max(c.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        var text = new StringBuilder();
        var active = snapshot.ActiveSite;
        text.Append("active site: ").Append(active is null ? "none (all backends down)" : Ordinal(active.Number)).Append('\n');
        Border(text, widths, '┌', '┬', '┐');
        Row(text, widths, Columns);
        foreach (var row in rows)
        {
            Row(text, widths, row);
        }

        Border(text, widths, '└', '┴', '┘');
        return text.ToString();
    }

    /// <summary>1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, …</summary>
    public static string Ordinal(int n)
    {
        var suffix = (n % 100) is 11 or 12 or 13 ? "th" : (n % 10) switch { 1 => "st", 2 => "nd", 3 => "rd", _ => "th" };
        return n.ToString(CultureInfo.InvariantCulture) + suffix;
    }

    /// <summary>Redraws in place every 500 ms until cancelled (terminal only).</summary>
    public async Task RunAsync(TextWriter output, CancellationToken cancellationToken)
    {
        await output.WriteAsync("\u001b[H\u001b[2J");
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(500), time);
        do
        {
            await output.WriteAsync("\u001b[H" + Render().Replace("\n", "\u001b[K\n", StringComparison.Ordinal) + "\u001b[J");
            await output.FlushAsync(cancellationToken);
        }
        while (await timer.WaitForNextTickAsync(cancellationToken));
    }

    private static void Border(StringBuilder text, int[] widths, char left, char middle, char right)
    {
        text.Append(left);
        for (var i = 0; i < widths.Length; i++)
        {
            text.Append('─', widths[i] + 2).Append(i == widths.Length - 1 ? right : middle);
        }

        text.Append('\n');
    }

    private static void Row(StringBuilder text, int[] widths, string[] cells)
    {
        text.Append('│');
        for (var i = 0; i < widths.Length; i++)
        {
            text.Append(' ').Append(cells[i].PadRight(widths[i])).Append(" │");
        }

        text.Append('\n');
    }
}
