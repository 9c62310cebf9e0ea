using System.Globalization;

namespace Sidekick.Caching;

/// <summary>
/// What a sidecar filling an entry tells the others through the bucket: who fills, a sequence that grows with
/// every renewal, and its progress (the object's length once the origin's head is known, the bytes received and
/// the time since the body began, so a waiter can tell whether the fill will finish within its own wait without comparing
/// clocks of different hosts). Once the entry is in the store the lease says so for a while (<see cref="Stored"/>)
/// before it is removed: a miss whose store lookup came just before the commit, and whose lease read came after
/// it, then looks in the store again instead of fetching the object from the origin.
/// </summary>
internal sealed record FillLease(string Owner, long Sequence, long Length, long Received, long ElapsedMs, bool Stored = false)
{
    private const string StoredMark = "stored";

    /// <summary>How long the body must have been coming before its rate says anything (the first bytes come in bursts).</summary>
    public const long MeasuredAfterMs = 1000;

    /// <summary>The time the origin still needs at the body's rate so far; null until that rate has been measured.</summary>
    public TimeSpan? Remaining => Length > 0 && Received > 0 && ElapsedMs >= MeasuredAfterMs
        ? TimeSpan.FromMilliseconds((double)Math.Max(0, Length - Received) * ElapsedMs / Received)
        : null;

    public static FillLease? Parse(string? text)
    {
        var fields = text?.Split(' ');
        return fields is { Length: 5 or 6 } && fields[0].Length > 0 && (fields.Length == 5 || fields[5] == StoredMark) &&
               long.TryParse(fields[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var sequence) &&
               long.TryParse(fields[2], NumberStyles.Integer, CultureInfo.InvariantCulture, out var length) &&
               long.TryParse(fields[3], NumberStyles.Integer, CultureInfo.InvariantCulture, out var received) &&
               long.TryParse(fields[4], NumberStyles.Integer, CultureInfo.InvariantCulture, out var elapsed)
            ? new FillLease(fields[0], sequence, length, received, elapsed, Stored: fields.Length == 6)
            : null;
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Owner} {Sequence} {Length} {Received} {ElapsedMs}{(Stored ? " " + StoredMark : "")}");
}
