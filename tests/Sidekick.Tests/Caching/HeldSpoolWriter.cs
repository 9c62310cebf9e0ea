using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Holds the process's one spool writer thread before its next write of the fill of <c>target</c>, as a hung spool
/// device would hold it, until <see cref="Release"/> or the end of the test (which also takes the hook away). Only
/// that fill's writes: fills of test classes running meanwhile go through the same thread, and one of theirs held
/// in its place left this test's own write queued behind the next hold (a flaky wait).
/// </summary>
internal sealed class HeldSpoolWriter : IDisposable
{
    private readonly ManualResetEventSlim _release = new(false);
    private readonly TaskCompletionSource _held = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public HeldSpoolWriter(string target) => DirectSpoolWriter.BeforeWriteForTests = fill =>
    {
        if (fill.Target != target)
        {
            return;
        }

        _held.TrySetResult();
        _release.Wait();
    };

    /// <summary>Completes once the writer thread is held.</summary>
    public Task Held => _held.Task;

    public void Release() => _release.Set();

    public void Dispose()
    {
        DirectSpoolWriter.BeforeWriteForTests = null;
        _release.Set();
        _release.Dispose();
    }
}
