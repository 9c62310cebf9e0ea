using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using Sidekick.Caching;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Caching;

/// <summary>
/// RFC 9111 as a conformance matrix: one test or theory row per requirement, named after its section, each
/// through a real sidekick with s3rver as the store (SIDEKICK_CACHE_MIN_SIZE=0) in front of a raw-socket
/// origin that answers with exactly the bytes a row gives. "Fresh" means the second request is served from
/// the cache without reaching the origin; "stale" means the origin is asked again. Every row uses paths of
/// its own: the bucket is shared by the whole class.
/// </summary>
public sealed class Rfc9111ConformanceTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const string Body = "0123456789 stored body 0123456789";
    private const string FarFuture = "Thu, 01 Dec 2095 16:00:00 GMT";
    private const string LongAgo = "Mon, 01 Jan 2024 00:00:00 GMT";

    // ---- §4.2.1, §5.1, §5.2.2.1, §5.2.2.10, §5.3: freshness lifetime and age ----

    public static TheoryData<string, string, bool> FreshnessRows => new()
    {
        // section, the response's freshness fields, fresh?
        { "§5.2.2.10 s-maxage overrides max-age in a shared cache (fresh)", "Cache-Control: max-age=0, s-maxage=600", true },
        { "§5.2.2.10 s-maxage overrides max-age in a shared cache (stale)", "Cache-Control: max-age=600, s-maxage=0", false },
        { "§5.2.2.10 s-maxage overrides Expires", $"Cache-Control: s-maxage=0\r\nExpires: {FarFuture}", false },
        { "§5.2.2.1 max-age", "Cache-Control: max-age=600", true },
        { "§5.2.2.4 no-cache in a second Cache-Control line", "Cache-Control: max-age=600\r\nCache-Control: no-cache", false },
        { "§5.2.2.1 max-age=0", "Cache-Control: max-age=0", false },
        { "§4.2.1 negative max-age is invalid: stale", "Cache-Control: max-age=-1", false },
        { "§4.2.1 non-integer max-age is invalid: stale, not Expires", $"Cache-Control: max-age=1.5\r\nExpires: {FarFuture}", false },
        { "§4.2.1 quoted invalid max-age: stale, not Expires", $"Cache-Control: max-age=\"ten\"\r\nExpires: {FarFuture}", false },
        { "§4.2.1 max-age without a value: stale, not heuristics", $"Cache-Control: max-age\r\nLast-Modified: {LongAgo}", false },
        { "§4.2.1 invalid s-maxage: stale, not max-age", "Cache-Control: s-maxage=soon, max-age=600", false },
        { "§4.2.1 max-age twice in one line: stale", "Cache-Control: max-age=600, max-age=600", false },
        { "§4.2.1 max-age in two field lines: stale", "Cache-Control: max-age=600\r\nCache-Control: max-age=300", false },
        { "§5.3 Expires in the future", $"Expires: {FarFuture}", true },
        { "§5.3 Expires in the obsolete RFC 850 format (RFC 9110 §5.6.7)", "Expires: Friday, 01-Dec-45 16:00:00 GMT", true },
        { "§5.3 Expires in the obsolete asctime format (RFC 9110 §5.6.7)", "Expires: Fri Dec  1 16:00:00 2045", true },
        { "§5.3 Expires with a wrong weekday is not an HTTP-date: expired", "Expires: Mon, 01 Dec 2095 16:00:00 GMT", false },
        { "§5.3 Expires with two spaces where the grammar has one is not an HTTP-date: expired", "Expires: Thu, 01  Dec  2095 16:00:00 GMT", false },
        { "§5.3 Expires in asctime format with two spaces after the weekday is not an HTTP-date", "Expires: Fri  Dec  1 16:00:00 2045", false },
        { "§5.3 Expires: 0 is already expired, not heuristics", $"Expires: 0\r\nLast-Modified: {LongAgo}", false },
        { "§5.3 Expires not an HTTP-date is already expired", $"Expires: next year\r\nLast-Modified: {LongAgo}", false },
        { "§4.2.1 two Expires field lines: stale", $"Expires: {FarFuture}\r\nExpires: {FarFuture}", false },
        { "§4.2.3 Age beyond max-age: stale", "Cache-Control: max-age=600\r\nAge: 700", false },
        { "§5.1 list-based Age: its first member counts", "Cache-Control: max-age=600\r\nAge: 700, 5", false },
        { "§5.1 invalid Age is ignored", "Cache-Control: max-age=600\r\nAge: soon", true },
        { "§5.1 negative Age is ignored", "Cache-Control: max-age=600\r\nAge: -700", true },
    };

    [Theory]
    [MemberData(nameof(FreshnessRows))]
    public async Task Freshness_lifetime_4_2_1(string section, string fields, bool fresh)
    {
        var path = Unique("/fresh");
        await using var origin = new Origin(_ => Response(200, $"ETag: \"e\"\r\n{fields}\r\n", Body));
        await using var sidekick = await StartAsync(origin);

        var miss = await sidekick.SendAsync("GET", path);
        Assert.Equal(200, miss.Status);
        await sidekick.UntilFilledAsync(1, section);

        var again = await sidekick.SendAsync("GET", path);
        Assert.Equal(200, again.Status);
        Assert.Equal(Body, again.Body);
        if (fresh)
        {
            Assert.True(again.Values("X-Cache") is ["HIT"], $"{section}: {again.Head}");
            Assert.Equal(1, origin.Asked(path));
        }
        else
        {
            Assert.True(origin.Asked(path) == 2, $"{section}: the origin was asked {origin.Asked(path)} times; {again.Head}");
            Assert.NotEqual(["HIT"], again.Values("X-Cache"));
        }
    }

    // ---- §3 storing responses: any final status with explicit freshness ----

    public static TheoryData<int, string> ExplicitlyFreshStatuses => new()
    {
        { 203, "" }, { 204, "" }, { 300, "" }, { 301, "Location: /moved\r\n" }, { 302, "Location: /found\r\n" },
        { 307, "Location: /temporary\r\n" }, { 308, "Location: /permanent\r\n" }, { 403, "" }, { 404, "" }, { 410, "" },
        { 418, "" }, { 500, "" }, { 503, "" },
    };

    [Theory]
    [MemberData(nameof(ExplicitlyFreshStatuses))]
    public async Task Storing_responses_3_any_final_status_with_explicit_freshness_is_reused_while_fresh(int status, string fields)
    {
        var path = Unique("/status");
        var body = status == 204 ? "" : $"status {status} body";
        await using var origin = new Origin(_ => Response(status, $"Cache-Control: max-age=600\r\n{fields}", body));
        await using var sidekick = await StartAsync(origin);

        var miss = await sidekick.SendAsync("GET", path);
        Assert.Equal(status, miss.Status);
        await sidekick.UntilFilledAsync(1, $"the fill of the {status}");

        var hit = await sidekick.SendAsync("GET", path);
        Assert.Equal(status, hit.Status);
        Assert.Equal(["HIT"], hit.Values("X-Cache"));
        Assert.Equal(body, hit.Body);
        Assert.Equal(1, origin.Asked(path));
        if (status == 204)
        {
            Assert.Empty(hit.Values("Content-Length")); // RFC 9110 §8.6
        }
        else
        {
            Assert.Equal([body.Length.ToString(CultureInfo.InvariantCulture)], hit.Values("Content-Length"));
        }

        if (fields.Length > 0)
        {
            Assert.Equal(miss.Values("Location"), hit.Values("Location"));
        }

        // HEAD is answered from the same entry (RFC 9110 §9.3.2): the status and fields, no content.
        using var head = await sidekick.Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, path) { Headers = { Host = "rfc.example" } });
        Assert.Equal(status, (int)head.StatusCode);
        Assert.Equal("HIT", head.Headers.GetValues("X-Cache").Single());
        Assert.Empty(await head.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, origin.Asked(path));
    }

    [Fact]
    public async Task Storing_responses_3_a_stored_error_is_not_answered_with_304_or_206()
    {
        // RFC 9110 §13.2.1 / §14.2: the client's conditionals and Range apply to a 2xx only.
        var path = Unique("/stored-404");
        await using var origin = new Origin(_ => Response(404, "Cache-Control: max-age=600\r\nETag: \"gone\"\r\n", "not here"));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill of the 404");

        var conditional = await sidekick.SendAsync("GET", path, "If-None-Match: \"gone\"");
        Assert.Equal(404, conditional.Status);
        var range = await sidekick.SendAsync("GET", path, "Range: bytes=0-2");
        Assert.Equal(404, range.Status);
        Assert.Equal("not here", range.Body);
    }

    [Theory]
    [InlineData(200, 404)]
    [InlineData(404, 404)]
    [InlineData(410, 200)]
    public async Task Handling_a_validation_response_4_3_3_a_full_response_replaces_the_stored_one(int stored, int replacement)
    {
        // §4.3.3: a full response (not a 304) to the cache's conditional request is used to satisfy the request
        // and, when storable (§3), replaces the stored response.
        var path = Unique("/replaced");
        var asked = 0;
        await using var origin = new Origin(_ => Interlocked.Increment(ref asked) == 1
            ? Response(stored, "Cache-Control: max-age=0\r\nETag: \"old\"\r\n", "old body")
            : Response(replacement, "Cache-Control: max-age=600\r\nETag: \"new\"\r\n", "new body"));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the first fill");

        var replaced = await sidekick.SendAsync("GET", path);
        Assert.Equal((replacement, "new body"), (replaced.Status, replaced.Body));
        await sidekick.UntilFilledAsync(2, "the replacement's fill");

        var hit = await sidekick.SendAsync("GET", path);
        Assert.Equal((replacement, "new body", "HIT"), (hit.Status, hit.Body, hit.Values("X-Cache").Single()));
        Assert.Equal(2, origin.Asked(path));
    }

    // ---- §4.2.2 heuristic freshness ----

    public static TheoryData<int, bool> HeuristicRows => new()
    {
        // status, heuristically cacheable by default (RFC 9110 §15.1)?
        { 200, true }, { 203, true }, { 300, true }, { 301, true }, { 308, true }, { 404, true }, { 405, true },
        { 410, true }, { 414, true }, { 501, true },
        { 302, false }, { 303, false }, { 307, false }, { 401, false }, { 403, false }, { 500, false }, { 503, false },
    };

    [Theory]
    [MemberData(nameof(HeuristicRows))]
    public async Task Heuristic_freshness_4_2_2_only_for_statuses_heuristically_cacheable_by_default(int status, bool heuristic)
    {
        var path = Unique("/heuristic");
        var location = status is >= 300 and < 400 ? "Location: /elsewhere\r\n" : "";
        await using var origin = new Origin(_ => Response(status, $"Last-Modified: {LongAgo}\r\nETag: \"h\"\r\n{location}", $"status {status}"));
        await using var sidekick = await StartAsync(origin);

        var first = await sidekick.SendAsync("GET", path);
        Assert.Equal(status, first.Status);
        if (heuristic)
        {
            await sidekick.UntilFilledAsync(1, $"the fill of the {status}");
        }

        var second = await sidekick.SendAsync("GET", path);
        Assert.Equal(status, second.Status);
        Assert.Equal(heuristic ? 1 : 2, origin.Asked(path));
        Assert.Equal(heuristic ? ["HIT"] : ["MISS"], second.Values("X-Cache"));
    }

    // ---- §4.1 Vary: * ----

    public static TheoryData<string> VaryStarRows => new()
    {
        "Vary: *",
        "Vary: Accept-Encoding, *",
        "Vary: *, Accept-Encoding",
        "Vary: Accept-Encoding\r\nVary: *",
        "vary:   *   ",
        "VARY: X-A,*,X-B",
        "Vary: \t*",
    };

    [Theory]
    [MemberData(nameof(VaryStarRows))]
    public async Task Vary_4_1_a_star_is_never_served_without_a_new_request(string vary)
    {
        var path = Unique("/vary-star");
        await using var origin = new Origin(_ => Response(200, $"Cache-Control: max-age=600\r\nETag: \"v\"\r\n{vary}\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        var fills = sidekick.Metrics.Fills;

        await sidekick.SendAsync("GET", path, "Accept-Encoding: gzip", "X-A: 1");
        var second = await sidekick.SendAsync("GET", path, "Accept-Encoding: gzip", "X-A: 1");
        Assert.Equal(200, second.Status);
        Assert.Equal(2, origin.Asked(path));
        Assert.Equal(["MISS"], second.Values("X-Cache"));
        Assert.Equal(fills, sidekick.Metrics.Fills); // not even stored (a fill starts before the client has the head)
    }

    // ---- §4.2.4, §5.2.2.2, §5.2.2.4, §5.2.2.8, §5.2.2.10: never served stale, even when the origin is gone ----

    public static TheoryData<string, string, string> MustRevalidateRows => new()
    {
        // section, Cache-Control, validator
        { "§5.2.2.2 must-revalidate", "max-age=0, must-revalidate, stale-if-error=600", "ETag: \"m\"\r\n" },
        { "§5.2.2.8 proxy-revalidate", "max-age=0, proxy-revalidate, stale-if-error=600", "ETag: \"m\"\r\n" },
        { "§5.2.2.4 no-cache", "no-cache, max-age=600, stale-if-error=600", "ETag: \"m\"\r\n" },
        { "§5.2.2.10 s-maxage", "s-maxage=0, stale-if-error=600", "ETag: \"m\"\r\n" },
        { "§5.2.2.2 must-revalidate, no validator", "max-age=0, must-revalidate", "" },
        { "§5.2.2.10 s-maxage, Last-Modified only", "s-maxage=0", $"Last-Modified: {LongAgo}\r\n" },
    };

    [Theory]
    [MemberData(nameof(MustRevalidateRows))]
    public async Task Serving_stale_4_2_4_is_a_504_when_the_origin_cannot_be_reached(string section, string cacheControl, string validator)
    {
        var path = Unique("/must-revalidate");
        var origin = new Origin(_ => Response(200, $"Cache-Control: {cacheControl}\r\n{validator}", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, section);
        await origin.DisposeAsync();

        var answer = await sidekick.SendAsync("GET", path);
        Assert.True(answer.Status == 504, $"{section}: {answer.Head}{answer.Body}");
        Assert.DoesNotContain(Body, answer.Body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serving_stale_4_2_4_is_a_504_also_for_a_request_with_its_own_validator()
    {
        var path = Unique("/must-revalidate-own-validator");
        var origin = new Origin(_ => Response(200, "Cache-Control: max-age=0, must-revalidate\r\nETag: \"m\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");
        await origin.DisposeAsync();

        var answer = await sidekick.SendAsync("GET", path, "If-None-Match: \"other\"");
        Assert.True(answer.Status == 504, answer.Head + answer.Body);
    }

    [Theory]
    [MemberData(nameof(MustRevalidateRows))]
    public async Task Serving_stale_4_2_4_an_error_from_the_origin_is_passed_not_hidden(string section, string cacheControl, string validator)
    {
        var path = Unique("/must-revalidate-error");
        var asked = 0;
        await using var origin = new Origin(_ => Interlocked.Increment(ref asked) == 1
            ? Response(200, $"Cache-Control: {cacheControl}\r\n{validator}", Body)
            : Response(503, "", "origin trouble"));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, section);

        var answer = await sidekick.SendAsync("GET", path);
        Assert.True(answer.Status == 503 && answer.Body == "origin trouble", $"{section}: {answer.Head}{answer.Body}");
    }

    [Theory]
    [InlineData("ETag: \"s\"\r\n")]
    [InlineData("")]
    public async Task Serving_stale_4_2_4_without_those_directives_stale_if_error_may_stand_in(string validator)
    {
        // The contrast to the rows above (RFC 5861 §4): the same entry without must-revalidate is served stale.
        var path = Unique("/stale-if-error");
        var origin = new Origin(_ => Response(200, $"Cache-Control: max-age=0, stale-if-error=600\r\n{validator}", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");
        await origin.DisposeAsync();

        var answer = await sidekick.SendAsync("GET", path);
        Assert.Equal(200, answer.Status);
        Assert.Equal(Body, answer.Body);
    }

    [Theory]
    [InlineData("max-age=0", true)]
    [InlineData("max-age=0, must-revalidate", false)]
    [InlineData("max-age=0, proxy-revalidate", false)]
    [InlineData("s-maxage=0", false)]
    public async Task Max_stale_5_2_1_2_never_overrides_must_revalidate_5_2_2_2(string cacheControl, bool servedStale)
    {
        var path = Unique("/max-stale");
        await using var origin = new Origin(_ => Response(200, $"Cache-Control: {cacheControl}\r\nETag: \"x\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");

        var answer = await sidekick.SendAsync("GET", path, "Cache-Control: max-stale=3600");
        Assert.Equal(200, answer.Status);
        Assert.Equal(servedStale ? 1 : 2, origin.Asked(path));
    }

    // ---- §5.2.1.7 only-if-cached ----

    [Fact]
    public async Task Only_if_cached_5_2_1_7_on_a_stale_entry_is_a_504()
    {
        var path = Unique("/only-if-cached");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=0\r\nETag: \"o\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");

        var answer = await sidekick.SendAsync("GET", path, "Cache-Control: only-if-cached");
        Assert.Equal(504, answer.Status);
        Assert.Equal(1, origin.Asked(path));
    }

    // ---- §4.3.4 freshening stored responses upon validation ----

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Freshening_4_3_4_the_304s_field_values_are_served_and_stored(bool withAuthorization)
    {
        var path = Unique("/freshen");
        var revalidations = 0;
        await using var origin = new Origin(request =>
        {
            if (!request.Head.Contains("\r\nIf-None-Match: \"f1\"\r\n", StringComparison.OrdinalIgnoreCase))
            {
                return Response(200, "Cache-Control: max-age=0\r\nETag: \"f1\"\r\nX-Custom: old\r\nContent-Type: text/plain\r\n", Body);
            }

            // The first 304 carries new values; later ones only the validator, so what they serve must come from
            // the stored metadata the first one updated.
            return Interlocked.Increment(ref revalidations) == 1
                ? Response(304, "ETag: \"f1\"\r\nCache-Control: max-age=600\r\nX-Custom: new\r\nX-Custom: newer\r\nContent-Type: text/x-new\r\n", "")
                : Response(304, "ETag: \"f1\"\r\n", "");
        });
        await using var sidekick = await StartAsync(origin);
        string[] credentials = withAuthorization ? ["Authorization: Bearer alice"] : [];
        await sidekick.SendAsync("GET", path, credentials);
        await sidekick.UntilFilledAsync(1, "the fill");

        var revalidated = await sidekick.SendAsync("GET", path, credentials);
        Assert.Equal(200, revalidated.Status);
        Assert.Equal(["REVALIDATED"], revalidated.Values("X-Cache"));
        AssertFreshened(revalidated);

        // The stored response was updated: fresh now for anyone (max-age=600 from the 304); for a credentialed
        // entry still confirmed with the requester's own 304 first (§3.5), yet served with the new values.
        var next = await sidekick.SendAsync("GET", path, credentials);
        Assert.Equal(200, next.Status);
        Assert.Equal(withAuthorization ? ["REVALIDATED"] : ["HIT"], next.Values("X-Cache"));
        Assert.Equal(withAuthorization ? 3 : 2, origin.Asked(path));
        AssertFreshened(next);

        // Updated in the bucket too (a copy of the entry onto itself with the new metadata), so another sidecar sharing
        // it serves the new values: from the bucket alone when fresh, after its requester's own 304 (which carries only
        // the validator now) when credentialed.
        await UntilStoredAsync(path, entry => entry.Headers.Any(h => h.Key == "X-Custom" && h.Value == "new"), "the 304's values in the bucket");
        await using var other = await StartAsync(origin);
        var elsewhere = await other.SendAsync("GET", path, credentials);
        Assert.Equal(200, elsewhere.Status);
        Assert.Equal(withAuthorization ? ["REVALIDATED"] : ["HIT"], elsewhere.Values("X-Cache"));
        Assert.Equal(withAuthorization ? 4 : 2, origin.Asked(path));
        AssertFreshened(elsewhere);

        static void AssertFreshened(RawAnswer answer)
        {
            Assert.Equal(["max-age=600"], answer.Values("Cache-Control"));
            Assert.Equal(["new", "newer"], answer.Values("X-Custom"));
            Assert.Equal(["text/x-new"], answer.Values("Content-Type"));
            Assert.Equal(["\"f1\""], answer.Values("ETag"));
            Assert.Equal(Body, answer.Body);
        }
    }

    [Fact]
    public async Task Freshening_4_3_4_a_background_revalidation_asks_about_the_entry_not_about_the_clients_copy()
    {
        // A stale-while-revalidate entry holds v1; the origin now has v2. A client holding v2 asks with its own
        // If-None-Match: "v2". Sent on in the background as it came, that validator got a 304 carrying v2's ETag, and
        // the 304 was applied to the entry: v1's bytes under v2's ETag, for every later client and sidecar. The
        // background request must ask about the entry's own validator, and a 304 updates only the response it
        // names (its strong validator, §4.3.4).
        var path = Unique("/background");
        var version = 1;
        await using var origin = new Origin(request =>
        {
            var current = $"\"v{Volatile.Read(ref version)}\"";
            return request.Head.Contains($"\r\nIf-None-Match: {current}\r\n", StringComparison.OrdinalIgnoreCase)
                ? Response(304, $"ETag: {current}\r\nCache-Control: max-age=0, stale-while-revalidate=600\r\n", "")
                : Response(200, $"ETag: {current}\r\nCache-Control: max-age=0, stale-while-revalidate=600\r\n", $"body-{current.Trim('"')}");
        });
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "v1's fill");

        Volatile.Write(ref version, 2);
        var holder = await sidekick.SendAsync("GET", path, "If-None-Match: \"v2\"");
        Assert.Equal((200, "body-v1"), (holder.Status, holder.Body));
        await Eventually.WaitUntilAsync(
            () => Enum.GetValues<BackgroundOutcome>().Sum(sidekick.Metrics.BackgroundRevalidationsOf) > 0, what: "the background revalidation's outcome");
        Assert.Equal(1, sidekick.Metrics.BackgroundRevalidationsOf(BackgroundOutcome.Changed));
        var state = System.Text.Json.JsonDocument.Parse(await sidekick.Client.GetStringAsync("/v1/state")).RootElement.GetProperty("cache");
        Assert.Equal(1, state.GetProperty("backgroundRevalidations").GetProperty("changed").GetInt64());
        Assert.Contains("\r\nIf-None-Match: \"v1\"\r\n", origin.Requests.Last(r => r.Target == path).Head, StringComparison.OrdinalIgnoreCase);

        var later = await sidekick.SendAsync("GET", path);
        Assert.Equal(200, later.Status);
        Assert.Equal($"\"{later.Body["body-".Length..]}\"", Assert.Single(later.Values("ETag")));
        Assert.Equal("body-v2", later.Body);
    }

    [Fact]
    public async Task Freshening_4_3_4_a_304_naming_another_version_updates_nothing_and_the_origins_current_response_is_served()
    {
        // A 304 carrying a strong ETag other than the entry's (an origin that answers every conditional request with
        // its current validator) does not select the entry: "MUST NOT use the new response to update any stored
        // responses". Served as REVALIDATED, the client would get v1's bytes under v2's ETag.
        var path = Unique("/other-version");
        var version = 1;
        await using var origin = new Origin(request =>
        {
            var current = $"\"v{Volatile.Read(ref version)}\"";
            return request.Head.Contains("\r\nIf-None-Match:", StringComparison.OrdinalIgnoreCase)
                ? Response(304, $"ETag: {current}\r\nCache-Control: max-age=0\r\n", "")
                : Response(200, $"ETag: {current}\r\nCache-Control: max-age=0\r\n", $"body-{current.Trim('"')}");
        });
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "v1's fill");

        Volatile.Write(ref version, 2);
        var answer = await sidekick.SendAsync("GET", path);

        Assert.Equal((200, "body-v2"), (answer.Status, answer.Body));
        Assert.Equal(["\"v2\""], answer.Values("ETag"));
        Assert.NotEqual(["REVALIDATED"], answer.Values("X-Cache"));
        // Nor was v2's ETag written onto v1's bytes in the bucket, for other sidecars: the entry is gone from it.
        using var s3 = fixture.Client();
        await Assert.ThrowsAsync<Amazon.S3.AmazonS3Exception>(
            () => s3.GetObjectMetadataAsync(CacheFixture.Bucket, CacheFixture.ObjectName(CacheKey.For("rfc.example", path))));
    }

    [Theory]
    [InlineData("no-store")]
    [InlineData("private")]
    public async Task Freshening_4_3_4_a_304_that_makes_the_entry_unstorable_serves_it_once_and_the_entry_goes(string directive)
    {
        // §4.3.4 updates the stored response with the 304's fields; with those, a shared cache may not keep it (§5.2.2.5,
        // §5.2.2.7). Kept, the entry went on being served, and refreshed in the bucket for every sidecar.
        var path = Unique("/freshened-away");
        await using var origin = new Origin(request => request.Head.Contains("\r\nIf-None-Match: \"k1\"\r\n", StringComparison.OrdinalIgnoreCase)
            ? Response(304, $"ETag: \"k1\"\r\nCache-Control: {directive}\r\n", "")
            : Response(200, "ETag: \"k1\"\r\nCache-Control: max-age=0\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");

        var revalidated = await sidekick.SendAsync("GET", path);
        Assert.Equal((200, Body), (revalidated.Status, revalidated.Body));
        Assert.Equal(["REVALIDATED"], revalidated.Values("X-Cache"));

        // Evicted once the body is out (the client can have all of it a moment before).
        await Eventually.WaitUntilAsync(() => sidekick.Metrics.Evictions > 0, what: "the entry's eviction");
        using var s3 = fixture.Client();
        await Assert.ThrowsAsync<Amazon.S3.AmazonS3Exception>(
            () => s3.GetObjectMetadataAsync(CacheFixture.Bucket, CacheFixture.ObjectName(CacheKey.For("rfc.example", path))));
        var next = await sidekick.SendAsync("GET", path);
        Assert.Equal(["MISS"], next.Values("X-Cache"));
    }

    // ---- §4.4 invalidating stored responses ----

    public static TheoryData<string, int, bool> InvalidationRows => new()
    {
        // method, the origin's status, invalidates?
        { "POST", 200, true }, { "PUT", 201, true }, { "DELETE", 204, true }, { "PATCH", 200, true },
        { "POST", 303, true }, { "M-SEARCH", 200, true }, { "PURGE", 200, true },
        { "POST", 404, false }, { "PUT", 500, false }, { "DELETE", 403, false },
        { "OPTIONS", 200, false }, { "TRACE", 200, false },
    };

    [Theory]
    [MemberData(nameof(InvalidationRows))]
    public async Task Invalidation_4_4_target_location_and_content_location(string method, int status, bool invalidates)
    {
        var prefix = Unique("/invalidate");
        var target = prefix + "/target";
        var location = prefix + "/location";
        var contentLocation = prefix + "/content-location";
        var elsewhere = prefix + "/other-host";
        await using var origin = new Origin(request => request.Method == "GET"
            ? Response(200, "Cache-Control: max-age=600\r\nETag: \"i\"\r\n", Body)
            : Response(status, $"Location: {location}\r\nContent-Location: http://rfc.example{contentLocation}\r\nContent-Location: http://other.example{elsewhere}\r\n", ""));
        await using var sidekick = await StartAsync(origin);
        string[] paths = [target, location, contentLocation, elsewhere];
        foreach (var path in paths)
        {
            await sidekick.SendAsync("GET", path);
        }

        await sidekick.UntilFilledAsync(paths.Length, "the four fills");
        foreach (var path in paths)
        {
            Assert.Equal(200, (await sidekick.SendAsync("GET", path, "Cache-Control: only-if-cached")).Status);
        }

        // The next request on the same connection starts once the unsafe one has been handled completely.
        var unsafeAnswer = await RawClient.ExchangeAsync(
            sidekick.Port,
            $"{method} {target} HTTP/1.1\r\nHost: rfc.example\r\nContent-Length: 0\r\n\r\n",
            $"GET {elsewhere} HTTP/1.1\r\nHost: rfc.example\r\nCache-Control: only-if-cached\r\n\r\n");
        Assert.True(unsafeAnswer.Status == status, $"{method}: {unsafeAnswer.Head}");
        Assert.True(origin.Requests.Any(r => r.Method == method), $"{method} did not reach the origin");
        Assert.Equal(200, unsafeAnswer.Next!.Status); // another host's URI is never invalidated

        foreach (var path in new[] { target, location, contentLocation })
        {
            var stored = await sidekick.SendAsync("GET", path, "Cache-Control: only-if-cached");
            Assert.True(stored.Status == (invalidates ? 504 : 200), $"{method} answered {status}: {path} -> {stored.Status}");
        }
    }

    [Fact]
    public async Task Invalidation_4_4_while_the_store_is_offline_is_carried_out_once_it_is_back()
    {
        // A DELETE that succeeds while the store cannot be used leaves the entry it invalidated in the bucket: that
        // version must not come back as a HIT once the store does, and sidekick deletes it then. On a fake clock, so
        // that the store stays offline until the test moves past the next probe.
        var target = Unique("/invalidate-offline");
        var deleted = 0;
        await using var origin = new Origin(request => request.Method == "DELETE"
            ? Response(Interlocked.Exchange(ref deleted, 1) == 0 ? 204 : 404, "", "")
            : Volatile.Read(ref deleted) == 1 ? Response(404, "", "") : Response(200, "Cache-Control: max-age=600\r\nETag: \"v1\"\r\n", Body));
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_MIN_SIZE"] = "0";
        var (instance, client) = await fixture.StartSidekickAsync([origin.Url], SidekickHarness.FastOptions, environment, time: time);
        await using var sidekick = new Running(instance, client);
        await sidekick.SendAsync("GET", target);
        await sidekick.UntilFilledAsync(1, "the entry");
        Assert.Equal(200, (await sidekick.SendAsync("GET", target, "Cache-Control: only-if-cached")).Status);

        var cache = instance.Server.Cache!;
        cache.Health.MarkOffline(new IOException("taken offline by the test"));
        Assert.Equal(204, (await sidekick.SendAsync("DELETE", target)).Status);
        Assert.Equal(404, (await sidekick.SendAsync("GET", target)).Status); // bypassed: the origin's answer

        using var store = new S3CacheStore(CacheOptions.FromEnvironment(fixture.Environment())!);
        var key = CacheKey.For("rfc.example", target);
        Assert.NotNull(await store.HeadAsync(key, default)); // still in the bucket while the store was offline

        time.Advance(CacheHealth.FirstRetry + TimeSpan.FromSeconds(1));
        await fixture.Eventually(() => cache.Health.Online, "the store back online");
        Assert.Equal(504, (await sidekick.SendAsync("GET", target, "Cache-Control: only-if-cached")).Status);
        var deadline = Environment.TickCount64 + 15000;
        while (await store.HeadAsync(key, default) is not null)
        {
            Assert.True(Environment.TickCount64 < deadline, "the invalidated entry was never deleted from the bucket");
            await Task.Delay(25);
        }
    }

    [Fact]
    public async Task Invalidation_4_4_a_target_without_a_query_is_evicted_once()
    {
        // Without a query the target's key with and without it is one key: one eviction (one delete), not two.
        var (deletes, evictions) = await InvalidateByPutAsync(Unique("/invalidate-once"), 204, "");

        Assert.True(deletes.Length == 1, $"the store saw: {string.Join(", ", deletes)}");
        Assert.Equal(1, evictions);
    }

    [Fact]
    public async Task Invalidation_4_4_evicts_a_bounded_number_of_related_uris()
    {
        // A backend answering a PUT with 500 Content-Location values on the same origin: the target and the first
        // Invalidation.MaxRelatedUris of them are evicted (each key once), not a thousand entries inside the request.
        var prefix = Unique("/invalidate-many");
        var target = prefix + "/target";
        var related = string.Concat(Enumerable.Range(0, 500).Select(i => $"Content-Location: {prefix}/related/{i}\r\n"));
        var (deletes, evictions) = await InvalidateByPutAsync(target, 201, related);

        Assert.True(deletes.Length == 1 + Invalidation.MaxRelatedUris, $"{deletes.Length} deletes; the store saw: {string.Join(", ", deletes.Take(20))}");
        string[] expected = [target, .. Enumerable.Range(0, Invalidation.MaxRelatedUris).Select(i => $"{prefix}/related/{i}")];
        foreach (var path in expected)
        {
            var name = CacheFixture.ObjectName(CacheKey.For("rfc.example", path));
            Assert.Contains(deletes, d => d.EndsWith("/" + name, StringComparison.Ordinal));
        }

        Assert.Equal(1 + Invalidation.MaxRelatedUris, evictions);
    }

    /// <summary>
    /// A PUT of <paramref name="target"/> that the origin answers with <paramref name="status"/> and
    /// <paramref name="fields"/>, then an only-if-cached GET of it: the deletes the store saw, and the evictions counted.
    /// </summary>
    private async Task<(string[] Deletes, long Evictions)> InvalidateByPutAsync(string target, int status, string fields)
    {
        await using var origin = new Origin(_ => Response(status, fields, ""));
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url);
        await using var sidekick = await StartAsync(origin, relay);

        var answer = await RawClient.ExchangeAsync(
            sidekick.Port,
            $"PUT {target} HTTP/1.1\r\nHost: rfc.example\r\nContent-Length: 0\r\n\r\n",
            $"GET {target} HTTP/1.1\r\nHost: rfc.example\r\nCache-Control: only-if-cached\r\n\r\n");
        Assert.Equal(status, answer.Status);
        return (Deletes(relay), sidekick.Metrics.Evictions);
    }

    /// <summary>The entries' deletes the store saw (not the leases', nor the conditional-write probe's at start).</summary>
    private static string[] Deletes(StoreRelay relay) =>
        relay.Requests.Where(r => r.StartsWith("DELETE ", StringComparison.Ordinal) && !r.EndsWith(".fill", StringComparison.Ordinal) &&
                                  !r.Contains("sidekick-conditional-write-probe-", StringComparison.Ordinal)).ToArray();

    // ---- §3 storing responses: Content-Range on a 200, and 416 ----

    [Fact]
    public async Task Storing_responses_3_a_200_with_Content_Range_is_stored_and_served_with_it()
    {
        // RFC 9110 §14.4: Content-Range has a meaning for 206 and 416 only; on a complete 200 to a request
        // without Range it is one more field, stored (§3.1) and served like the others.
        var path = Unique("/content-range-200");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=600\r\nContent-Range: whatever\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill of the 200 with Content-Range");

        var hit = await sidekick.SendAsync("GET", path);
        Assert.Equal((200, Body, "HIT"), (hit.Status, hit.Body, hit.Values("X-Cache").Single()));
        Assert.Equal(["whatever"], hit.Values("Content-Range"));
        Assert.Equal(1, origin.Asked(path));
    }

    [Fact]
    public async Task Storing_responses_3_a_200_with_Content_Range_to_a_Range_request_is_not_stored()
    {
        // The same field on a 200 that answers a Range request may label a piece as the whole: not stored.
        var path = Unique("/content-range-ranged");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=600\r\nContent-Range: bytes 0-3/40\r\n", "0123"));
        await using var sidekick = await StartAsync(origin);
        var fills = sidekick.Metrics.Fills;
        await sidekick.SendAsync("GET", path, "Range: bytes=0-3");
        Assert.Equal(fills, sidekick.Metrics.Fills); // a fill starts before the client has the head

        var again = await sidekick.SendAsync("GET", path);
        Assert.Equal(["MISS"], again.Values("X-Cache"));
        Assert.Equal(2, origin.Asked(path));
    }

    [Theory]
    [InlineData("bytes 0-3/4")] // the whole object in one piece: it would be stored and served as a 200
    [InlineData("bytes 4-7/12")] // one part of three: it would hold a fill open until its ranges gave up
    public async Task Storing_responses_3_4_a_206_to_a_request_without_Range_is_neither_stored_nor_combined(string contentRange)
    {
        // S3 answers GetObject with ?partNumber=N with that part as a 206, though the request has no Range (the AWS SDK
        // for Java's multipart download reads objects so). §3.4 combines the partial content of range requests; this
        // target names a part, not the object, so the answer is passed through, each time as the origin sent it.
        var path = Unique("/object") + "?partNumber=2";
        await using var origin = new Origin(_ => Response(206, $"Cache-Control: max-age=600\r\nETag: \"parts\"\r\nContent-Range: {contentRange}\r\n", "0123"));
        await using var sidekick = await StartAsync(origin);
        var fills = sidekick.Metrics.Fills;

        var first = await sidekick.SendAsync("GET", path);
        Assert.Equal(206, first.Status);
        Assert.Equal(fills, sidekick.Metrics.Fills);

        var again = await sidekick.SendAsync("GET", path);
        Assert.Equal(206, again.Status);
        Assert.Equal([contentRange], again.Values("Content-Range"));
        Assert.Equal("0123", again.Body);
        Assert.Equal(2, origin.Asked(path));
    }

    [Fact]
    public async Task Storing_responses_3_a_416_is_never_stored_even_with_explicit_freshness()
    {
        // A 416 answers the request's Range (RFC 9110 §15.5.17), which is not part of the cache key.
        var path = Unique("/unsatisfiable");
        var asked = 0;
        await using var origin = new Origin(_ => Interlocked.Increment(ref asked) == 1
            ? Response(416, "Cache-Control: max-age=600\r\n", "")
            : Response(200, "Cache-Control: max-age=600\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        var fills = sidekick.Metrics.Fills;
        Assert.Equal(416, (await sidekick.SendAsync("GET", path, "Range: bytes=900-999")).Status);
        Assert.Equal(fills, sidekick.Metrics.Fills);

        var whole = await sidekick.SendAsync("GET", path);
        Assert.Equal((200, Body), (whole.Status, whole.Body));
        Assert.Equal(2, origin.Asked(path));
    }

    [Fact]
    public async Task Storing_responses_3_a_412_is_never_stored_even_with_explicit_freshness()
    {
        // A 412 answers the request's preconditions (RFC 9110 §13.1.1, §13.1.4), which are not part of the cache key:
        // stored, it answered the next request for the URL, a plain GET without any precondition, with a 412.
        var path = Unique("/precondition");
        await using var origin = new Origin(request => request.Head.Contains("\r\nIf-Match:", StringComparison.OrdinalIgnoreCase)
            ? Response(412, "Cache-Control: max-age=600\r\n", "")
            : Response(200, "Cache-Control: max-age=600\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        Assert.Equal(412, (await sidekick.SendAsync("GET", path, "If-Match: \"other\"")).Status);

        var plain = await sidekick.SendAsync("GET", path);
        Assert.Equal((200, Body), (plain.Status, plain.Body));
        Assert.Equal(2, origin.Asked(path));
    }

    // ---- §4 constructing responses from caches ----

    [Fact]
    public async Task Constructing_responses_4_the_origins_Date_is_served_not_the_time_of_serving()
    {
        // RFC 9110 §6.6.1: Date is when the origin generated the message; the stored response keeps it, and
        // Age (§4.2.3, §5.1) says how long it has been stored since. The same on a 304 from the cache.
        var path = Unique("/date");
        var date = DateTimeOffset.UtcNow.AddSeconds(-5).ToString("r", CultureInfo.InvariantCulture);
        await using var origin = new Origin(_ => Response(200, $"Cache-Control: max-age=600\r\nETag: \"d\"\r\nDate: {date}\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        var miss = await sidekick.SendAsync("GET", path);
        Assert.Equal([date], miss.Values("Date"));
        await sidekick.UntilFilledAsync(1, "the fill");

        var hit = await sidekick.SendAsync("GET", path);
        Assert.Equal(["HIT"], hit.Values("X-Cache"));
        Assert.Equal([date], hit.Values("Date"));
        Assert.True(long.Parse(hit.Values("Age").Single(), CultureInfo.InvariantCulture) >= 5, hit.Head);

        var notModified = await sidekick.SendAsync("GET", path, "If-None-Match: \"d\"");
        Assert.Equal(304, notModified.Status);
        Assert.Equal([date], notModified.Values("Date"));
        Assert.Equal(1, origin.Asked(path));
    }

    [Fact]
    public async Task Constructing_responses_4_an_entry_gone_from_the_store_is_fetched_from_the_origin_and_the_store_stays_in_use()
    {
        // The lookup found an entry, and the read of its body finds it gone (evicted, or replaced by another
        // fill, in between): the request is answered by the origin (§4: a stored response that cannot be used is
        // not), and that is no store failure: the cache is not bypassed for everyone else.
        var entry = new CachedResponse
        {
            Status = 200,
            Headers = [new("Cache-Control", "max-age=600"), new("ETag", "\"gone\"")],
            Length = 10,
            ReceivedAt = DateTimeOffset.UtcNow,
            InitialAge = TimeSpan.Zero,
            Date = DateTimeOffset.UtcNow,
        }.Serialize();
        await using var store = new RawBackend(request => request.Method switch
        {
            "HEAD" => RawResponse.Text($"HTTP/1.1 200 OK\r\nETag: \"s3\"\r\nx-amz-meta-sidekick: {entry}\r\nContent-Length: 10\r\n\r\n"),
            "GET" when request.Target.Contains("list-type=2", StringComparison.Ordinal) => S3Xml(200,
                "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>cache</Name><Prefix>sidekick-health-probe/</Prefix>" +
                "<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"),
            _ => S3Xml(404, "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><RequestId>1</RequestId></Error>"),
        });
        var path = Unique("/vanished");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=600\r\n", Body));
        var environment = fixture.Environment(store.Url);
        environment["SIDEKICK_CACHE_MIN_SIZE"] = "0";
        environment["SIDEKICK_CACHE_HEALTH_DURATION"] = "1h";
        var (instance, client) = await fixture.StartSidekickAsync([origin.Url], SidekickHarness.FastOptions, environment);
        client.Dispose();
        await using var sidekick = new Running(instance, new HttpClient { BaseAddress = instance.Server.BaseAddress });

        var answer = await sidekick.SendAsync("GET", path);
        Assert.Equal((200, Body), (answer.Status, answer.Body));
        Assert.Equal(1, origin.Asked(path));
        Assert.True(store.Requests.Any(r => r.Method == "GET" && r.Target.Contains("/cache/", StringComparison.Ordinal)), "the body was never read from the store");
        Assert.True(instance.Server.Cache!.Health.Online, "a body gone from the store took the store offline");

        static RawResponse S3Xml(int status, string xml) => RawResponse.Text(
            $"HTTP/1.1 {status} {(status == 200 ? "OK" : "Not Found")}\r\nContent-Type: application/xml\r\nContent-Length: {xml.Length + 38}\r\n\r\n" +
            $"<?xml version=\"1.0\" encoding=\"UTF-8\"?>{xml}");
    }

    // ---- RFC 9110 §13.1.5 If-Range, answered from the cache ----

    [Theory]
    [InlineData("\"v1\"", "", 206)]
    [InlineData("\"v0\"", "", 200)]
    [InlineData("W/\"v1\"", "", 200)]
    [InlineData("Sat, 01 Jan 2000 00:00:00 GMT", "", 200)]
    [InlineData("Sat, 01 Jan 2000 00:00:00 GMT", "Last-Modified: Sat, 01 Jan 2000 00:00:00 GMT\r\n", 206)]
    [InlineData("Sun, 02 Jan 2000 00:00:00 GMT", "Last-Modified: Sat, 01 Jan 2000 00:00:00 GMT\r\n", 200)]
    public async Task If_range_13_1_5_a_range_of_the_entry_only_for_its_own_strong_validator(string ifRange, string lastModified, int status)
    {
        // A client resuming a download of another version (its If-Range names that version) must get the whole
        // entry, never a range of it spliced onto its old bytes. An entry without Last-Modified used to match any
        // If-Range that was not a date of its own (two absent dates compared equal).
        var path = Unique("/if-range");
        await using var origin = new Origin(_ => Response(200, $"Cache-Control: max-age=600\r\nETag: \"v1\"\r\n{lastModified}", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");

        var answer = await sidekick.SendAsync("GET", path, "Range: bytes=0-2", $"If-Range: {ifRange}");

        Assert.Equal(["HIT"], answer.Values("X-Cache"));
        Assert.Equal((status, status == 206 ? Body[..3] : Body), (answer.Status, answer.Body));
    }

    // ---- §3.5 storing responses to authenticated requests, with SIDEKICK_CACHE_SHARE_PUBLIC ----

    [Theory]
    [InlineData("", 200)]
    [InlineData("?response-cache-control=public%2Cmax-age%3D600", 403)]
    public async Task Storing_3_5_public_shares_an_authorized_response_only_when_the_owner_not_the_requester_said_so(string query, int anonymousStatus)
    {
        // S3 and MinIO let a signed request choose its response's Cache-Control (response-cache-control). With
        // SHARE_PUBLIC on, any reader could so mark a private object public, and the cache would hand it to anyone.
        var path = Unique("/owner-public") + query;
        await using var origin = new Origin(request =>
            !request.Head.Contains("\r\nAuthorization: Bearer alice\r\n", StringComparison.OrdinalIgnoreCase)
                ? Response(403, "", "denied")
                : Response(200, "Cache-Control: public, max-age=600\r\nETag: \"p1\"\r\n", Body));
        await using var sidekick = await StartAsync(origin, ("SIDEKICK_CACHE_SHARE_PUBLIC", "true"));
        await sidekick.SendAsync("GET", path, "Authorization: Bearer alice");
        await sidekick.UntilFilledAsync(1, "the authorized fill");

        var anonymous = await sidekick.SendAsync("GET", path);

        // Shared as the owner's public allows; asked of the origin with the anonymous request when the requester chose it.
        Assert.Equal((anonymousStatus, anonymousStatus == 200 ? Body : "denied"), (anonymous.Status, anonymous.Body));
        Assert.Equal(anonymousStatus == 200 ? ["HIT"] : ["MISS"], anonymous.Values("X-Cache"));
    }

    [Theory]
    [InlineData("", "X-Auth-Token: tk_alice")]
    [InlineData("?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=a%2F20261206&X-Goog-Expires=60&X-Goog-Signature=ab12", "")]
    [InlineData("?sv=2022-11-02&se=2026-12-06T21%3A00%3A00Z&sp=r&sig=c2lnbmF0dXJl", "")]
    public async Task Storing_3_5_other_stores_credentials_are_credentials_too(string query, string field)
    {
        // A Swift or RGW token, a GCS or Azure signed URL: a response to one is reused only after the origin confirms
        // it for each requester. Stored as anonymous, it went to requests without the token, and a signed URL's
        // entry outlived the URL's expiry.
        var path = Unique("/other-credentials") + query;
        var granted = 1;
        await using var origin = new Origin(request =>
            Volatile.Read(ref granted) == 1 && (field.Length == 0 || request.Head.Contains($"\r\n{field}\r\n", StringComparison.OrdinalIgnoreCase))
                ? Response(200, "Cache-Control: max-age=600\r\nETag: \"c1\"\r\n", Body)
                : Response(403, "", "denied"));
        await using var sidekick = await StartAsync(origin);
        string[] credentials = field.Length == 0 ? [] : [field];
        await sidekick.SendAsync("GET", path, credentials);
        await sidekick.UntilFilledAsync(1, "the credentialed fill");

        Volatile.Write(ref granted, 0); // the token revoked, the URL expired
        var later = await sidekick.SendAsync("GET", path);

        Assert.Equal((403, "denied"), (later.Status, later.Body));
    }

    // ---- what the bucket holds is checked as it is read ----

    [Theory]
    [InlineData("a time out of range", "{\"s\":200,\"l\":7,\"r\":9223372036854775807,\"a\":0,\"c\":false,\"h\":[\"Cache-Control\",\"max-age=600\"],\"v\":[]}")]
    [InlineData("an age out of range", "{\"s\":200,\"l\":7,\"r\":0,\"a\":9223372036854775807,\"c\":false,\"h\":[\"Cache-Control\",\"max-age=600\"],\"v\":[]}")]
    [InlineData("a field without a name", "{\"s\":200,\"l\":7,\"r\":0,\"a\":0,\"c\":false,\"h\":[null,\"x\"],\"v\":[]}")]
    [InlineData("an interim status", "{\"s\":101,\"l\":7,\"r\":0,\"a\":0,\"c\":false,\"h\":[\"Cache-Control\",\"max-age=600\"],\"v\":[]}")]
    public async Task Metadata_sidekick_did_not_write_is_a_miss_answered_by_the_origin(string what, string json)
    {
        // Whatever else has write access to the bucket (another tool, a damaged copy) may leave metadata no fill
        // writes. Read, an out-of-range time threw past the lookup's handling: the client got a 500.
        var path = Unique("/planted");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=600\r\n", Body));
        await Plant(path, json, "planted");
        await using var sidekick = await StartAsync(origin);

        var answer = await sidekick.SendAsync("GET", path);

        Assert.True((200, Body) == (answer.Status, answer.Body), $"{what}: {answer.Status} {answer.Body}");
        Assert.Equal(1, origin.Asked(path));
    }

    [Fact]
    public async Task Fields_a_fill_never_stores_are_not_served_from_an_entry_that_holds_them()
    {
        // A fill leaves Set-Cookie and hop-by-hop fields out; an object planted in the bucket with them does not
        // get them served to every client of the URL.
        var path = Unique("/planted-fields");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=600\r\n", Body));
        const string json = "{\"s\":200,\"l\":7,\"r\":4102444800000,\"a\":0,\"c\":false," +
                            "\"h\":[\"Cache-Control\",\"max-age=600\",\"Set-Cookie\",\"session=planted\",\"Connection\",\"close\",\"X-Kept\",\"yes\"],\"v\":[]}";
        await Plant(path, json, "planted");
        await using var sidekick = await StartAsync(origin);

        var answer = await sidekick.SendAsync("GET", path);

        Assert.Equal(["yes"], answer.Values("X-Kept"));
        Assert.Empty(answer.Values("Set-Cookie"));
        Assert.DoesNotContain("close", answer.Values("Connection"));
    }

    [Fact]
    public async Task A_stored_field_value_with_bytes_above_0x7F_is_served_as_the_origin_sent_it()
    {
        // S3 user metadata in UTF-8, stored as the origin sent it (each byte one Latin-1 character): served from the
        // bucket by a sidecar that never saw the origin's answer, the bytes go out unchanged, not a 500.
        var path = Unique("/stored-latin1");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=600\r\n", Body));
        const string json = "{\"s\":200,\"l\":7,\"r\":4102444800000,\"a\":0,\"c\":false," +
                            "\"h\":[\"Cache-Control\",\"max-age=600\",\"X-Amz-Meta-Stored-Name\",\"caf\\u00c3\\u00a9\"],\"v\":[]}";
        await Plant(path, json, "planted");
        await using var sidekick = await StartAsync(origin);

        var answer = await sidekick.SendAsync("GET", path);

        Assert.Equal((200, "planted"), (answer.Status, answer.Body));
        Assert.Equal(["caf\u00c3\u00a9"], answer.Values("X-Amz-Meta-Stored-Name"));
        Assert.Equal(0, origin.Asked(path));
    }

    private async Task Plant(string path, string json, string body)
    {
        using var s3 = fixture.Client();
        var put = new Amazon.S3.Model.PutObjectRequest
        {
            BucketName = CacheFixture.Bucket,
            Key = CacheFixture.ObjectName(CacheKey.For("rfc.example", path)),
            ContentBody = body,
            UseChunkEncoding = false,
        };
        put.Metadata[S3CacheStore.EntryMetadata] = Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(json));
        await s3.PutObjectAsync(put);
    }

    // ---- the harness ----

    private static string Unique(string name) => $"{name}-{Guid.NewGuid():N}";

    private static RawResponse Response(int status, string fields, string body) =>
        RawResponse.Text(status is 204 or 304
            ? $"HTTP/1.1 {status} Status\r\n{fields}\r\n"
            : $"HTTP/1.1 {status} Status\r\n{fields}Content-Length: {body.Length}\r\n\r\n{body}");

    /// <summary>Polls the bucket until the entry stored for <paramref name="path"/> (Host rfc.example) satisfies <paramref name="condition"/>.</summary>
    private async Task UntilStoredAsync(string path, Func<CachedResponse, bool> condition, string what)
    {
        using var s3 = fixture.Client();
        var key = CacheKey.For("rfc.example", path);
        var deadline = Environment.TickCount64 + 15000;
        while (true)
        {
            var head = await s3.GetObjectMetadataAsync(CacheFixture.Bucket, CacheFixture.ObjectName(key));
            if (CachedResponse.Deserialize(head.Metadata[S3CacheStore.EntryMetadata]) is { } entry && condition(entry))
            {
                return;
            }

            Assert.True(Environment.TickCount64 < deadline, $"timed out waiting for {what}");
            await Task.Delay(25);
        }
    }

    private Task<Running> StartAsync(Origin origin, params (string Name, string Value)[] settings) => StartAsync(origin, null, settings);

    private async Task<Running> StartAsync(Origin origin, StoreRelay? relay, params (string Name, string Value)[] settings)
    {
        var environment = fixture.Environment(relay?.Url);
        environment["SIDEKICK_CACHE_MIN_SIZE"] = "0";
        foreach (var (name, value) in settings)
        {
            environment[name] = value;
        }

        var (instance, client) = await fixture.StartSidekickAsync([origin.Url], SidekickHarness.FastOptions, environment);
        client.Dispose();
        // Redirects are answers under test here, not something to follow.
        return new Running(instance, new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false }) { BaseAddress = instance.Server.BaseAddress });
    }

    /// <summary>A raw-socket origin that counts the requests for each target.</summary>
    private sealed class Origin(Func<RawRequest, RawResponse> respond) : IAsyncDisposable
    {
        private readonly RawBackend _backend = new(respond);
        private bool _disposed;

        public Uri Url => _backend.Url;

        public ConcurrentQueue<RawRequest> Requests => _backend.Requests;

        public int Asked(string path) => _backend.Requests.Count(r => r.Target == path);

        public async ValueTask DisposeAsync()
        {
            if (!_disposed)
            {
                _disposed = true;
                await _backend.DisposeAsync();
            }
        }
    }

    /// <summary>A sidekick with the cache on, and ways to talk to it.</summary>
    private sealed class Running(SidekickInstance instance, HttpClient client) : IAsyncDisposable
    {
        public HttpClient Client => client;

        public int Port => instance.Server.BaseAddress.Port;

        public CacheMetrics Metrics => instance.Server.Cache!.Metrics;

        public Task<RawAnswer> SendAsync(string method, string target, params string[] fields) =>
            RawClient.ExchangeAsync(Port, $"{method} {target} HTTP/1.1\r\nHost: rfc.example\r\n{string.Concat(fields.Select(f => f + "\r\n"))}\r\n");

        /// <summary>Fills complete in the background after the client has its answer.</summary>
        public async Task UntilFilledAsync(long fills, string what)
        {
            var deadline = Environment.TickCount64 + 15000;
            while (Metrics.FillsCompleted < fills)
            {
                Assert.True(Environment.TickCount64 < deadline, $"timed out waiting for {what} to be stored ({Metrics.FillsCompleted} of {fills} fills completed, {Metrics.FillsAbandoned} abandoned)");
                await Task.Delay(25);
            }
        }

        public async ValueTask DisposeAsync()
        {
            client.Dispose();
            await instance.DisposeAsync();
        }
    }
}
