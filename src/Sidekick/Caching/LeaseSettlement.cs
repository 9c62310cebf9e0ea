namespace Sidekick.Caching;

/// <summary>
/// Who fills, when a miss takes its lease: the taking (a lease write and its read-back where the store ignores
/// If-None-Match, a conditional create where it honours it, <see cref="FillLeases.LostAsync"/>) runs beside the
/// origin request instead of before it, store round trips off every miss's first byte, and whichever comes first
/// decides. The taking first and naming another sidecar: the origin's answer is not taken, and the request waits for
/// that sidecar's fill as if it had seen its lease. The origin's head first: this request streams it; if the taking
/// then names another sidecar, this fill stores nothing (the two uploads must not replace each other under a
/// reader), and the object was fetched twice. That takes two sidecars that found no lease and took it within a round
/// trip of each other, and an origin that answers sooner than the store; with a slow or remote origin, where a
/// second fetch costs most, the store wins the race.
/// </summary>
internal sealed class LeaseSettlement(Task<bool> lost)
{
    private const int Open = 0, Streaming = 1, Yielding = 2;
    private int _state;

    /// <summary>True when another sidecar's lease stayed (completes with the read-back).</summary>
    public Task<bool> Lost => lost;

    /// <summary>
    /// Completes once the read-back's outcome has been acted on (the lease held, or this request's fill told to
    /// leave the upload to the other): a fill's store writes wait for it (<see cref="CacheFill.UploadAfter"/>).
    /// </summary>
    public Task Settled { get; set; } = Task.CompletedTask;

    /// <summary>The origin's head was not taken: the request waits for the other sidecar's fill.</summary>
    public bool YieldedAtHead { get; private set; }

    /// <summary>
    /// At the origin's head: true (the head is not taken) when the read-back already named another sidecar, else
    /// this request streams the origin's answer from now on.
    /// </summary>
    public bool YieldAtHead()
    {
        var decided = lost.IsCompletedSuccessfully && lost.Result ? Yielding : Streaming;
        Interlocked.CompareExchange(ref _state, decided, Open);
        YieldedAtHead = Volatile.Read(ref _state) == Yielding;
        return YieldedAtHead;
    }

    /// <summary>
    /// Once the read-back named another sidecar: true when this request was already streaming the origin's answer
    /// (its fill must leave the upload to the other); after this, a head that comes yields.
    /// </summary>
    public bool StreamingWhenLost() => Interlocked.CompareExchange(ref _state, Yielding, Open) == Streaming;
}
