using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Holds the process's one spool writer thread before its next write, as a hung spool device would hold it, until
/// <see cref="Release"/> or the end of the test (which also takes the hook away).
/// </summary>
internal sealed class HeldSpoolWriter : IDisposable
{
    private readonly ManualResetEventSlim _release = new(false);
    private readonly TaskCompletionSource _held = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public HeldSpoolWriter() => DirectSpoolWriter.BeforeWriteForTests = () =>
    {
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
