namespace Sidekick.Caching;

/// <summary>
/// Which byte ranges of a fill's body are in its spool: disjoint, sorted, merged intervals. A fill copied from one
/// whole response grows one interval from 0; a fill assembled from ranged responses (RFC 9111 §3.4) grows several,
/// in any order, until they meet. Not thread-safe: its fill serialises the writers.
/// </summary>
internal sealed class FillCoverage
{
    private readonly List<(long Start, long End)> _ranges = [];

    /// <summary>The end of the range that starts at 0: every byte before it is in the spool.</summary>
    public long Prefix => _ranges.Count > 0 && _ranges[0].Start == 0 ? _ranges[0].End : 0;

    /// <summary>
    /// The end of the range that holds byte <paramref name="position"/>: every byte from it to there is in the spool.
    /// <paramref name="position"/> itself when that byte is not.
    /// </summary>
    public long RunEnd(long position)
    {
        foreach (var (start, end) in _ranges)
        {
            if (start > position)
            {
                break;
            }

            if (position < end)
            {
                return end;
            }
        }

        return position;
    }

    /// <summary>Bytes in the spool, over all ranges.</summary>
    public long Covered { get; private set; }

    /// <summary>Records bytes [<paramref name="start"/>, <paramref name="end"/>) as written.</summary>
    public void Add(long start, long end)
    {
        if (end <= start)
        {
            return;
        }

        // The first range that ends at or after start may touch or overlap the new one; merge every such range.
        var i = 0;
        while (i < _ranges.Count && _ranges[i].End < start)
        {
            i++;
        }

        var merged = (Start: start, End: end);
        while (i < _ranges.Count && _ranges[i].Start <= merged.End)
        {
            Covered -= _ranges[i].End - _ranges[i].Start;
            merged = (Math.Min(merged.Start, _ranges[i].Start), Math.Max(merged.End, _ranges[i].End));
            _ranges.RemoveAt(i);
        }

        _ranges.Insert(i, merged);
        Covered += merged.End - merged.Start;
    }
}
