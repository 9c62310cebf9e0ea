namespace Sidekick.Caching;

/// <summary>
/// Cuts a fill's store write (a whole PUT, a multipart upload's begin, part or abort) that has taken no byte of
/// its body and sent no answer for <see cref="Timeout"/>; a multipart upload's completion after
/// <see cref="CompletionTimeout"/>, since its short list of parts shows no progress and a store may take minutes over it
/// for a large object (see <see cref="CacheFill"/>). The SDK's own limit is minutes per try: a store that
/// accepts the connection and then stalls (a node gone without a reset, a full disk behind it) held each fill's spool
/// budget and slot that long, and every fill it started meanwhile. A store that is merely slow keeps reading the
/// body, which counts as progress, and is not cut.
/// </summary>
internal sealed class StoreWriteStall : IDisposable
{
    /// <summary>How long a store write may go without progress.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// How long a multipart upload's completion may take. S3 answers it 200 at once and then sends whitespace while it
    /// joins the parts, so the SDK's own timeout (which ends at the response's headers) does not bound it: a store
    /// gone silent after those headers would hold the fill's spool and slot for as long as the process runs.
    /// </summary>
    public static readonly TimeSpan CompletionTimeout = TimeSpan.FromMinutes(15);

    // The clock is moved on at most this often: the signer reads a part 4 KiB at a time (a quarter of a million
    // reads per GiB), and a timer's re-arming costs more than a clock read.
    private static readonly TimeSpan Rearm = TimeSpan.FromSeconds(1);

    private readonly TimeProvider _time;
    private readonly TimeSpan _timeout;
    private readonly CancellationTokenSource _stalled;
    private readonly CancellationTokenSource _either;
    private long _armedAt;

    public StoreWriteStall(TimeProvider time, CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        _time = time;
        _timeout = timeout ?? Timeout;
        _armedAt = time.GetTimestamp();
        _stalled = new CancellationTokenSource(_timeout, time);
        _either = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stalled.Token);
    }

    /// <summary>Cancelled when the write stalled or the fill was given up.</summary>
    public CancellationToken Token => _either.Token;

    /// <summary>The write moved on (the HTTP client or the signer read more of its body): the clock starts again.</summary>
    public void Progressed()
    {
        var now = _time.GetTimestamp();
        if (_time.GetElapsedTime(_armedAt, now) >= Rearm && !_stalled.IsCancellationRequested)
        {
            _armedAt = now;
            _stalled.CancelAfter(_timeout);
        }
    }

    /// <summary>
    /// Runs one store write under the watch; its stall is a <see cref="TimeoutException"/> naming <paramref name="what"/>
    /// (a store error: the fill is given up as store_error, with that line).
    /// </summary>
    public static async Task<T> RunAsync<T>(TimeProvider time, string what, Func<StoreWriteStall, Task<T>> write, CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        using var stall = new StoreWriteStall(time, cancellationToken, timeout);
        try
        {
            return await write(stall);
        }
        catch (OperationCanceledException ex) when (stall._stalled.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"the store took nothing more of {what} and did not answer for {stall._timeout.TotalSeconds:F0} s", ex);
        }
    }

    /// <summary><see cref="RunAsync{T}"/> for a write that returns nothing.</summary>
    public static Task RunAsync(TimeProvider time, string what, Func<StoreWriteStall, Task> write, CancellationToken cancellationToken, TimeSpan? timeout = null) =>
        RunAsync(time, what, async stall =>
        {
            await write(stall);
            return true;
        }, cancellationToken, timeout);

    public void Dispose()
    {
        _either.Dispose();
        _stalled.Dispose();
    }
}
