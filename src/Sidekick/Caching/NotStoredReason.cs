namespace Sidekick.Caching;

/// <summary>
/// Why a GET's answer was served but not stored (sidekick_cache_not_stored_total, /v1/state; docs/cache.md). The
/// origin's own choices (no-store, private, a status or a response without freshness or validator) and the size
/// limits are counted; those an operator can change (too large, fills busy, headers too large) are also logged.
/// </summary>
internal enum NotStoredReason
{
    /// <summary>A status a shared cache does not store here: 1xx, 206 to no Range, 304, 416 (RFC 9111 §3).</summary>
    Status,

    /// <summary>no-store in the request or the response (§5.2.1.5, §5.2.2.5).</summary>
    NoStore,

    /// <summary>Cache-Control: private: not for a shared cache (§5.2.2.7).</summary>
    Private,

    /// <summary>Vary: * (§4.1): no later request can be matched to it.</summary>
    VaryStar,

    /// <summary>A partial answer that cannot be combined (several ranges, weak or no ETag, unknown complete length, §3.4).</summary>
    RangeNotCombinable,

    /// <summary>No Content-Length: the entry's size must be known before its upload starts.</summary>
    UnknownLength,

    /// <summary>Smaller than SIDEKICK_CACHE_MIN_SIZE.</summary>
    TooSmall,

    /// <summary>Larger than SIDEKICK_CACHE_MAX_SIZE.</summary>
    TooLarge,

    /// <summary>Neither explicit freshness nor a validator with a heuristically cacheable status (§3, §4.2.2).</summary>
    NoFreshness,

    /// <summary>Its header fields do not fit the store's 2 KiB of user metadata.</summary>
    HeadersTooLarge,

    /// <summary>SIDEKICK_CACHE_MAX_FILLS fills were already running, or a quarter of them combined ranges and this range would start one more.</summary>
    FillsBusy,

    /// <summary>
    /// The request carries a field that can change the origin's answer and is not part of an entry's name
    /// (<see cref="BypassingFields"/>): the cache was bypassed, neither read nor filled.
    /// </summary>
    UnkeyedHeader,

    /// <summary>
    /// The request carries an SSE-C key (<see cref="BypassingFields"/>): an entry would keep the plaintext of an object
    /// encrypted with the customer's key in the cache's bucket. The cache was bypassed, neither read nor filled.
    /// </summary>
    CustomerKey,
}
