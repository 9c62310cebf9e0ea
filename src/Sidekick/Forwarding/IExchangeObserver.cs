using System.Buffers;

namespace Sidekick.Forwarding;

/// <summary>
/// Lets the cache watch and steer an exchange that goes through the normal forwarding path (both forwarders,
/// retries, resume, statistics, outliers, traces), instead of talking to a backend on a path of its own.
/// </summary>
internal interface IExchangeObserver
{
    /// <summary>
    /// Called when the backend's response head has been put on <c>context.Response</c> (status and header
    /// values exactly as the backend sent them), before any body byte goes out; again if a retry brings another
    /// head. Returning false takes the response over: its body is not copied and nothing is sent, so the caller
    /// answers the client itself (e.g. from the store after a 304).
    /// </summary>
    bool OnResponseHead(HttpContext context);

    /// <summary>
    /// Called when no backend answered (none is up, or every attempt failed before a response head). True when
    /// the observer answers the client itself (e.g. from a stale entry) instead of sidekick's 502.
    /// </summary>
    bool OnNoAnswer(HttpContext context);

    /// <summary>Every response body byte, as it goes to the client (a resumed body's too).</summary>
    void OnBody(ReadOnlySpan<byte> data);

    /// <summary>
    /// Memory the next body bytes may be received into and sent to the client from, at most <paramref name="maxLength"/>
    /// bytes: where the observer keeps them (a fill's spool buffer at the body's next offset), so that
    /// <see cref="OnBody"/> finds them in place and copies nothing. Null when it has none (the default: an observer of a
    /// stand-in request has no client connection to lend to). The owner is disposed once nothing reads or writes it any
    /// more (after the bytes written there were sent).
    /// </summary>
    IMemoryOwner<byte>? LendBody(long maxLength) => null;

    /// <summary>
    /// Completes when the observer is ready for more body bytes (a fill whose spool writer is behind): a body's copy
    /// loop awaits it before it receives more from the backend, so the copy loop's thread never blocks on the observer.
    /// </summary>
    ValueTask WhenBodyWritable();

    /// <summary>
    /// The body's copy waits for the client to take bytes (true), or stopped waiting (false): how much of the time the
    /// client, not the backend, paces the body. Called in pairs, from the copy loop, only for writes that did wait.
    /// </summary>
    void ClientHolding(bool holding)
    {
    }
}
