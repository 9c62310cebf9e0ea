using System.Globalization;
using Microsoft.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>What to do with a stored response for one request.</summary>
internal enum CacheDecision
{
    /// <summary>Fresh and allowed: serve without contacting the backend.</summary>
    Serve,

    /// <summary>Stale within stale-while-revalidate: serve now, revalidate in the background.</summary>
    ServeAndRevalidate,

    /// <summary>Ask the backend first (conditional request with the requester's own credentials).</summary>
    Revalidate,
}

/// <summary>The RFC 9111 rules for a shared cache, as pure functions of headers and time.</summary>
internal static class CachePolicy
{
    /// <summary>Presigned-URL query parameters (SigV4 and SigV2), left out of a presigned request's cache key.</summary>
    private static readonly string[] PresignParameters =
        ["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-Security-Token", "X-Amz-SignedHeaders", "X-Amz-Algorithm", "Signature", "AWSAccessKeyId", "Expires"];

    /// <summary>Whether the (decoded) query parameter name is one of a presigned URL's signing parameters.</summary>
    public static bool IsPresignParameter(string name) =>
        PresignParameters.Any(p => string.Equals(p, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// What a request header named by Vary contributes to selecting a stored response (§4.1): its field lines
    /// combined, or, when the request lacks it, a mark no field value can hold (NUL), since a field absent from a
    /// request matches only one absent from the stored request, never one sent empty.
    /// </summary>
    public static string VaryValue(IHeaderDictionary headers, string name) =>
        headers.TryGetValue(name, out var value) ? value.ToString() : "\0";

    /// <summary>
    /// Whether <paramref name="entry"/>'s own Vary selects this request (§4.1): every header it names has the value
    /// the request that filled it had. Checked on the entry itself, not only through its variant's name, because the
    /// name is made of the values alone and the marker naming the Vary headers is the latest response's: an origin
    /// that changed what it varies on would otherwise have an old variant answer a request whose other header carries
    /// the same value.
    /// </summary>
    public static bool VarySelects(CachedResponse entry, IHeaderDictionary headers)
    {
        for (var i = 0; i < entry.VaryNames.Count; i++)
        {
            if (VaryValue(headers, entry.VaryNames[i]) != entry.VaryValues[i])
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Whether the (decoded) query parameter name is, or names, a credential (<see cref="Security.CredentialParameters"/>,
    /// the list the output redacts): any one makes the request a credentialed one. Those of Google Cloud Storage's and
    /// Azure's signed URLs are not left out of the key, but each reuse is confirmed with its requester, so an entry is
    /// not served past its URL's expiry.
    /// </summary>
    public static bool IsCredentialParameter(string name) => Security.CredentialParameters.Contains(name);

    /// <summary>OpenStack Swift's and Ceph RGW's token header, their Authorization.</summary>
    private const string AuthToken = "X-Auth-Token";

    /// <summary>
    /// The request carries credentials (§3.5): an Authorization header, a cookie (a session is a credential
    /// too), or a presigned query. Its response may be stored, but is then reused only after each requester's
    /// own conditional request succeeds.
    /// </summary>
    public static bool CarriesCredentials(HttpRequest request) =>
        request.Headers.ContainsKey(HeaderNames.Authorization) ||
        request.Headers.ContainsKey(HeaderNames.Cookie) ||
        request.Headers.ContainsKey(AuthToken) ||
        (request.QueryString.HasValue && request.Query.Keys.Any(IsCredentialParameter));

    /// <summary>
    /// Whether reusing <paramref name="entry"/> needs the requester's own 304 first: always for an entry filled
    /// with credentials, unless the operator opted in (SIDEKICK_CACHE_SHARE_PUBLIC) to RFC 9111 §3.5's
    /// exception for responses marked public or s-maxage.
    /// </summary>
    public static bool NeedsRequesterValidation(CachedResponse entry, CacheControl response, CacheOptions options) =>
        entry.FilledWithCredentials && !(options.SharePublic && (response.Has("public") || response.Has("s-maxage")));

    /// <summary>Whether a shared cache may go on keeping a response with these directives (§5.2.2.5, §5.2.2.7).</summary>
    public static bool MayKeep(CacheControl response) => !StoreForbidden(response) && !response.Has("private");

    /// <summary>
    /// no-store, unless must-understand stands beside it: a cache that implements must-understand (§5.2.2.3) ignores
    /// no-store for a status it understands (the origin sends both so that older caches store nothing at all).
    /// </summary>
    private static bool StoreForbidden(CacheControl response) => response.Has("no-store") && !response.Has("must-understand");

    /// <summary>
    /// The final statuses whose caching rules this cache implements: those RFC 9110 §15 defines. A response with
    /// must-understand and any other status is never stored (§3, §5.2.2.3).
    /// </summary>
    private static readonly HashSet<int> Understood =
    [
        200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408,
        409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 426, 500, 501, 502, 503, 504, 505,
    ];

    /// <summary>
    /// Statuses a cache may give heuristic freshness (RFC 9110 §15.1, RFC 9111 §4.2.2); any other status is
    /// reused only with explicit freshness. 206 is listed but never stored here: the cache keeps full
    /// responses only.
    /// </summary>
    private static readonly int[] HeuristicallyCacheable = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

    public static bool IsHeuristicallyCacheable(int status) => HeuristicallyCacheable.Contains(status);

    /// <summary>
    /// Whether a response may be stored (§3): a complete response with a final status to a GET (not a 206,
    /// whose parts this cache does not combine, nor a 304, which has no content of its own), no no-store on
    /// either side, not private (this is a shared cache), no <c>Vary: *</c> (§4.1: it can never be selected
    /// without a new request), a known length within bounds, and something that lets it be reused: explicit
    /// freshness for any status, or, for a status that is heuristically cacheable, a validator or the
    /// configured default freshness. Content-Range means nothing on a 200 (RFC 9110 §14.4): it is an ordinary
    /// field there, stored like any other, unless the request asked for a range, when the 200 could be a piece
    /// mislabelled by its server. A 416 answers the request's Range, and a 412 its preconditions (If-Match,
    /// If-Unmodified-Since), which the key does not hold: never stored, or a request without them would get it.
    /// </summary>
    public static bool IsStorable(
        int status, CacheControl request, CacheControl response, IReadOnlyList<KeyValuePair<string, string>> headers, long? length, CacheOptions options,
        bool rangeRequested = false) =>
        WhyNotStorable(status, request, response, headers, length, options, rangeRequested) is null;

    /// <summary>Why a response may not be stored, or null when it may (the rules of <see cref="IsStorable"/>).</summary>
    public static NotStoredReason? WhyNotStorable(
        int status, CacheControl request, CacheControl response, IReadOnlyList<KeyValuePair<string, string>> headers, long? length, CacheOptions options,
        bool rangeRequested = false)
    {
        string? Header(string name) => headers.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;
        if (status is < 200 or 206 or 304 or 412 or 416)
        {
            return NotStoredReason.Status;
        }

        if (response.Has("must-understand") && !Understood.Contains(status))
        {
            return NotStoredReason.Status;
        }

        if (request.Has("no-store") || StoreForbidden(response))
        {
            return NotStoredReason.NoStore;
        }

        if (response.Has("private"))
        {
            return NotStoredReason.Private;
        }

        if (VariesOnEverything(headers))
        {
            return NotStoredReason.VaryStar;
        }

        if (rangeRequested && Header(HeaderNames.ContentRange) is not null)
        {
            return NotStoredReason.RangeNotCombinable;
        }

        if (length is not { } size)
        {
            return NotStoredReason.UnknownLength;
        }

        if (size < options.MinSize || size > options.MaxSize)
        {
            return size < options.MinSize ? NotStoredReason.TooSmall : NotStoredReason.TooLarge;
        }

        var hasFreshness = response.Has("max-age") || response.Has("s-maxage") || Header(HeaderNames.Expires) is not null;
        var hasValidator = Header(HeaderNames.ETag) is not null || Header(HeaderNames.LastModified) is not null;
        return hasFreshness || (IsHeuristicallyCacheable(status) && (hasValidator || options.DefaultMaxAge > TimeSpan.Zero))
            ? null
            : NotStoredReason.NoFreshness;
    }

    /// <summary>A <c>*</c> member in any Vary field line, in any spelling (§4.1).</summary>
    public static bool VariesOnEverything(IReadOnlyList<KeyValuePair<string, string>> headers) =>
        headers.Any(h => string.Equals(h.Key, HeaderNames.Vary, StringComparison.OrdinalIgnoreCase) &&
                         h.Value.Split(',').Any(member => member.Trim(' ', '\t') == "*"));

    /// <summary>
    /// Freshness lifetime (§4.2.1): s-maxage (this is a shared cache, §5.2.2.10), max-age, Expires − Date,
    /// then a heuristic (§4.2.2) for statuses that allow one. Freshness information that is present but
    /// invalid (a malformed or duplicated directive, several Expires lines, an Expires that is not a date)
    /// makes the response stale (§4.2.1, §5.3), never falls through to the next source.
    /// </summary>
    public static TimeSpan FreshnessLifetime(CachedResponse entry, CacheControl response, CacheOptions options)
    {
        // CDN-Cache-Control's max-age shortens a lifetime, never lengthens it (TargetedCacheControl).
        var lifetime = OwnFreshnessLifetime(entry, response, options);
        return response.TargetedMaxAge is { } cap && cap < lifetime ? cap : lifetime;
    }

    private static TimeSpan OwnFreshnessLifetime(CachedResponse entry, CacheControl response, CacheOptions options)
    {
        if (response.Has("s-maxage"))
        {
            return response.Seconds("s-maxage") ?? TimeSpan.Zero;
        }

        if (response.Has("max-age"))
        {
            return response.Seconds("max-age") ?? TimeSpan.Zero;
        }

        var expiresLines = entry.Headers.Where(h => string.Equals(h.Key, HeaderNames.Expires, StringComparison.OrdinalIgnoreCase)).ToArray();
        if (expiresLines.Length > 0)
        {
            // An invalid Expires (e.g. "0") means already expired, and so do two of them.
            var expires = expiresLines.Length == 1 ? CachedResponse.HttpDate(expiresLines[0].Value) : null;
            var date = entry.Date ?? entry.ReceivedAt;
            return expires is { } at && at > date ? at - date : TimeSpan.Zero;
        }

        if (!IsHeuristicallyCacheable(entry.Status))
        {
            return TimeSpan.Zero;
        }

        if (entry.LastModified is { } lastModified)
        {
            // 10% of the time since last modification, the common heuristic; capped at one day.
            var since = (entry.Date ?? entry.ReceivedAt) - lastModified;
            return since > TimeSpan.Zero ? TimeSpan.FromTicks(Math.Min(since.Ticks / 10, TimeSpan.TicksPerDay)) : TimeSpan.Zero;
        }

        return options.DefaultMaxAge;
    }

    /// <summary>current_age (§4.2.3): the age when received plus the time it has been stored.</summary>
    public static TimeSpan CurrentAge(CachedResponse entry, DateTimeOffset now)
    {
        var resident = now - entry.ReceivedAt;
        return entry.InitialAge + (resident > TimeSpan.Zero ? resident : TimeSpan.Zero);
    }

    /// <summary>corrected_initial_age from the response's Age and Date and the request/response times.</summary>
    public static TimeSpan InitialAge(string? ageHeader, DateTimeOffset? date, DateTimeOffset requestTime, DateTimeOffset responseTime)
    {
        var apparent = date is { } d && responseTime > d ? responseTime - d : TimeSpan.Zero;
        // §5.1: of a list-based Age the first member counts; an invalid one (not a non-negative integer) is ignored.
        var first = ageHeader?.Split(',')[0].Trim();
        var ageValue = CacheControl.DeltaSeconds(first) ?? TimeSpan.Zero;
        var corrected = ageValue + (responseTime - requestTime);
        return apparent > corrected ? apparent : corrected;
    }

    /// <summary>
    /// Decides how to use a stored response (§4, §4.2.4, RFC 5861). An entry filled with credentials is
    /// confirmed with the backend for every request, anonymous ones included (<see cref="NeedsRequesterValidation"/>).
    /// <paramref name="requestHasCredentials"/> keeps a stale-while-revalidate refresh from being sent in the
    /// background with a requester's credentials.
    /// </summary>
    public static CacheDecision Decide(CachedResponse entry, CacheControl request, CacheControl response, DateTimeOffset now, CacheOptions options, bool requestHasCredentials)
    {
        if (NeedsRequesterValidation(entry, response, options))
        {
            return CacheDecision.Revalidate;
        }

        if (request.Has("no-cache") || response.Has("no-cache"))
        {
            return CacheDecision.Revalidate;
        }

        var lifetime = FreshnessLifetime(entry, response, options);
        var age = CurrentAge(entry, now);
        // The request's own limits (§5.2.1.1, §5.2.1.3): a client that sets them does not want this copy, fresh or not.
        var refused = (request.Seconds("max-age") is { } maxAge && age > maxAge) ||
                      (request.Seconds("min-fresh") is { } minFresh && lifetime - age < minFresh);
        if (age < lifetime && !refused)
        {
            return CacheDecision.Serve;
        }

        var staleness = age - lifetime;
        var mustRevalidate = MustNotServeStale(response);
        if (!mustRevalidate && request.MaxStale is { } maxStale && staleness <= maxStale)
        {
            return CacheDecision.Serve;
        }

        // Only a stale response may be served while it revalidates (RFC 5861 §3), and not to a request that refused it.
        if (!mustRevalidate && !requestHasCredentials && !refused && staleness >= TimeSpan.Zero &&
            response.Seconds("stale-while-revalidate") is { } swr && staleness <= swr)
        {
            return CacheDecision.ServeAndRevalidate;
        }

        return CacheDecision.Revalidate;
    }

    /// <summary>
    /// A stale copy of this response may never be used without the origin's confirmation, not even when the
    /// origin cannot be reached: must-revalidate (§5.2.2.2), proxy-revalidate (§5.2.2.8) and s-maxage
    /// (§5.2.2.10) in a shared cache, and no-cache (§5.2.2.4), which needs the confirmation even when fresh.
    /// When no backend answers, the client gets a 504 (§4.2.4), not the stale body.
    /// </summary>
    public static bool MustNotServeStale(CacheControl response) =>
        response.Has("must-revalidate") || response.Has("proxy-revalidate") || response.Has("s-maxage") || response.Has("no-cache");

    /// <summary>
    /// Whether a stale entry may stand in for a failed revalidation (RFC 5861 stale-if-error). Never one filled
    /// with credentials (nothing proved this requester may read it), nor one that must not be served stale.
    /// </summary>
    public static bool MayServeStaleOnError(CachedResponse entry, CacheControl request, CacheControl response, DateTimeOffset now, CacheOptions options)
    {
        if (NeedsRequesterValidation(entry, response, options) || MustNotServeStale(response))
        {
            return false;
        }

        var staleness = CurrentAge(entry, now) - FreshnessLifetime(entry, response, options);
        var window = request.Seconds("stale-if-error") ?? response.Seconds("stale-if-error");
        return window is { } allowed && staleness <= allowed;
    }

    /// <summary>
    /// Methods whose non-error answer invalidates what the cache holds for the URIs involved (§4.4): every
    /// method not defined as safe (RFC 9110 §9.2.1: GET, HEAD, OPTIONS, TRACE), unknown ones included.
    /// </summary>
    public static bool IsUnsafe(string method) =>
        !HttpMethods.IsGet(method) && !HttpMethods.IsHead(method) && !HttpMethods.IsOptions(method) && !HttpMethods.IsTrace(method);

    /// <summary>§4.4's "non-error status code": 2xx and 3xx.</summary>
    public static bool InvalidatesOn(int status) => status is >= 200 and < 400;
}
