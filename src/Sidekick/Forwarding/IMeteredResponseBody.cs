using System.IO.Pipelines;

namespace Sidekick.Forwarding;

/// <summary>
/// The response body as the exchange meter wraps it, seen by a forwarder that works below the stream: it can
/// take the server's own output writer, so a long body is received from the backend straight into the
/// buffers the server sends from (no copy through a stream), and it reports what it wrote and what it
/// already counted, so the exchange is metered as if everything had gone through the stream.
/// </summary>
internal interface IMeteredResponseBody
{
    /// <summary>The server's own writer (start the response first, so its head goes out with the first body bytes).</summary>
    PipeWriter ServerWriter { get; }

    /// <summary>The response body as a stream that counts what goes through it (for bodies copied in pieces).</summary>
    Stream Body { get; }

    /// <summary>The observer of the exchange (the cache), or null: asked about the response head, shown the body.</summary>
    IExchangeObserver? Observer { get; }

    /// <summary>Counts bytes written through <see cref="ServerWriter"/>.</summary>
    void Wrote(ReadOnlySpan<byte> data);

    /// <summary>
    /// Completes when the <see cref="Observer"/> is ready for more body bytes (<see cref="IExchangeObserver.WhenBodyWritable"/>):
    /// await it before receiving more after <see cref="Wrote"/>. At once (no allocation) without an observer.
    /// </summary>
    ValueTask WhenObserverReady();

    /// <summary>
    /// The request's header bytes as <see cref="ExchangeMeter.RequestHeaderBytes"/> counts them, and the fields its
    /// trace names the client by, from a forwarder that walked the headers anyway (so the meter need not walk them
    /// again).
    /// </summary>
    void CountedRequestHeaders(long bytes, in Observability.ClientAddressFields clientFields);
}
