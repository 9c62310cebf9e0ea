using System.Collections.Concurrent;
using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A <see cref="CacheFills"/> built outside sidekick, as the cache builds it, for tests that drive fills directly.
/// Each fill given up is recorded as one line in the words operators see (the metric's reason label).
/// </summary>
internal sealed class FillsUnderTest : IDisposable
{
    private readonly ConcurrentQueue<string> _abandonments = new(); // given up on the spool writer's or upload's thread too

    /// <param name="environment">The cache's settings.</param>
    /// <param name="time">The clock; the real one when null.</param>
    /// <param name="writesDirect">False: whole fills write their spool through the page cache, as where O_DIRECT fails.</param>
    /// <param name="beforeSpoolWrite">Run by each page-cache spool write just before its bytes are written.</param>
    public FillsUnderTest(IReadOnlyDictionary<string, string?> environment, TimeProvider? time = null, bool writesDirect = true,
        Action<CacheFill>? beforeSpoolWrite = null)
    {
        Options = CacheOptions.FromEnvironment(environment)!;
        Time = time ?? TimeProvider.System;
        Store = new S3CacheStore(Options);
        Metrics = new CacheMetrics();
        Fills = new CacheFills(Options, Store, Metrics, Time) { WritesDirect = writesDirect, BeforeSpoolWriteForTests = beforeSpoolWrite };
        Fills.Abandoned += (target, reason, detail) => _abandonments.Enqueue($"{target} {CacheMetrics.AbandonLabel(reason)}: {detail}");
    }

    public CacheOptions Options { get; }

    public TimeProvider Time { get; }

    public S3CacheStore Store { get; }

    public CacheMetrics Metrics { get; }

    public CacheFills Fills { get; }

    /// <summary>"target reason_label: detail", one a fill given up, in order.</summary>
    public IReadOnlyCollection<string> Abandonments => _abandonments;

    public void Dispose()
    {
        Fills.Dispose();
        Metrics.Dispose();
        Store.Dispose();
    }
}
