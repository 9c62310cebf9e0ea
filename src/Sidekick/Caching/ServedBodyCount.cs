namespace Sidekick.Caching;

/// <summary>
/// The body bytes the cache handed to the client for one request it answered itself (HIT, REVALIDATED), a request
/// feature set by whoever reports them (the trace): a client that leaves midway got fewer than the Content-Length
/// announced, and the trace's ↓ must say what was sent, as it does for a forwarded response.
/// </summary>
internal sealed class ServedBodyCount
{
    public long Bytes { get; private set; }

    public void Add(int count) => Bytes += count;
}
