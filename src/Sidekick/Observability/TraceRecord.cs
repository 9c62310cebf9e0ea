namespace Sidekick.Observability;

/// <summary>
/// One traced exchange: a proxied request or a health probe that got a response. A struct, passed by reference to
/// where it is formatted (on the request's thread): as a class it was one more object per request for the
/// collector, measured at ~1,000 instructions per traced request in the collections it added.
/// </summary>
internal readonly record struct TraceRecord
{
    public TraceRecord()
    {
    }

    public required bool IsProbe { get; init; }
    public required string Host { get; init; }
    public required DateTime Time { get; init; }
    public required string Client { get; init; }
    public long Rx { get; init; }
    public long Tx { get; init; }
    public TimeSpan Latency { get; init; }
    public TimeSpan TimeToFirstByte { get; init; }
    public required int StatusCode { get; init; }
    public required string Method { get; init; }
    public required string Path { get; init; }
    public string Query { get; init; } = "";
    /// <summary>The backend's probe URL (the <c>minio</c> trace filter matches against it).</summary>
    public required string ProbeUrl { get; init; }
    public DateTime? ResponseTime { get; init; }
    public IReadOnlyList<KeyValuePair<string, string[]>>? RequestHeaders { get; init; }
    public IReadOnlyList<KeyValuePair<string, string[]>>? ResponseHeaders { get; init; }
    /// <summary>The cache's verdict (HIT, MISS, REVALIDATED, BYPASS) when the cache is on.</summary>
    public string? Cache { get; init; }
    /// <summary>The forwarding path the (last) attempt took and why; null for probes and cache-served responses.</summary>
    public Forwarding.PathChoice? Forwarder { get; init; }
    /// <summary>Why the exchange failed after its response began (e.g. a refused download resume), or null.</summary>
    public string? Error { get; init; }
    /// <summary>The start of an error response body (at most 64 KiB), for the debug trace.</summary>
    public string? ResponseBody { get; init; }
}
