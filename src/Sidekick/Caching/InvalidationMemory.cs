using System.Collections.Concurrent;

namespace Sidekick.Caching;

/// <summary>
/// What this sidecar invalidated lately (RFC 9111 §4.4), by its clock: loose paths (<see cref="LoosePath"/>: every
/// spelling and query of a path) and buckets (every path under one). An entry found for a request whose loose path is
/// covered, and received before the invalidation, is taken for a miss. Deleting entries from the bucket is not enough:
/// they are named by exact spelling (a write cannot name every query, encoding and Host a reader used), and another
/// sidecar sharing the bucket may still be uploading the version the write replaced, which lands after the delete.
/// Entries' receive times are their filler's clock, so clocks more than a few milliseconds apart narrow what this
/// catches.
/// <para>Bounded: the paths are cleared when full, the oldest bucket is dropped. Forgetting only gives back the hit the
/// cache gave before this memory existed (other spellings, and uploads that landed late).</para>
/// </summary>
internal sealed class InvalidationMemory(TimeProvider time)
{
    /// <summary>Every unsafe request adds a few paths (a DeleteObjects up to 1,000): about 2 MB at most.</summary>
    internal const int MaxPaths = 10_000;

    /// <summary>Bucket-wide invalidations (policy, ACL, a bucket deleted, a DeleteObjects body not read) are rare.</summary>
    internal const int MaxBuckets = 1_000;

    /// <summary>How long an invalidation outlasts the uploads it may have to outrun (a multi-GiB upload takes minutes).</summary>
    internal static TimeSpan Remembered { get; } = TimeSpan.FromHours(1);

    private readonly ConcurrentDictionary<string, DateTimeOffset> _paths = new(StringComparer.Ordinal);

    // By the bucket's loose path (its first segment), or LoosePath.Root for every path.
    private readonly ConcurrentDictionary<string, DateTimeOffset> _buckets = new(StringComparer.Ordinal);
    private readonly Lock _bucketsFull = new();

    // Lookups skip the loose form (a string per hit) until anything is remembered.
    private volatile bool _any;

    public void RememberPaths(IReadOnlyCollection<string> paths, DateTimeOffset at)
    {
        if (paths.Count == 0)
        {
            return;
        }

        if (_paths.Count + paths.Count > MaxPaths)
        {
            _paths.Clear(); // a bound, not an LRU
        }

        foreach (var path in paths)
        {
            _paths[path] = at;
        }

        _any = true;
    }

    /// <summary>Every path under <paramref name="bucket"/> (a first segment such as <c>/data</c>; the root: every path).</summary>
    public void RememberBucket(string bucket, DateTimeOffset at)
    {
        lock (_bucketsFull)
        {
            if (_buckets.Count >= MaxBuckets && !_buckets.ContainsKey(bucket))
            {
                _buckets.TryRemove(_buckets.MinBy(b => b.Value).Key, out _);
            }

            _buckets[bucket] = at;
        }

        _any = true;
    }

    /// <summary>Whether an entry for <paramref name="request"/> received at <paramref name="receivedAt"/> predates an invalidation of its path.</summary>
    public bool Covers(HttpRequest request, DateTimeOffset receivedAt) => _any && Covers(LoosePath.Of(request), receivedAt);

    public bool Covers(string loose, DateTimeOffset receivedAt)
    {
        if (!_any)
        {
            return false;
        }

        var now = time.GetUtcNow();
        return Covered(_paths, loose, receivedAt, now) ||
               Covered(_buckets, LoosePath.FirstSegment(loose), receivedAt, now) ||
               Covered(_buckets, LoosePath.Root, receivedAt, now);
    }

    private static bool Covered(ConcurrentDictionary<string, DateTimeOffset> memory, string name, DateTimeOffset receivedAt, DateTimeOffset now)
    {
        if (!memory.TryGetValue(name, out var invalidated))
        {
            return false;
        }

        if (now - invalidated > Remembered)
        {
            memory.TryRemove(new KeyValuePair<string, DateTimeOffset>(name, invalidated));
            return false;
        }

        return receivedAt <= invalidated;
    }
}
