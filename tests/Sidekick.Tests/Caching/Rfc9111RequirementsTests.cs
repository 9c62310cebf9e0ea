using System.Collections.Concurrent;
using System.Globalization;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Caching;

/// <summary>
/// More requirements of RFC 9111 (and the parts of RFC 9110 a cache answers for), each named after its section, the
/// comment quoting the sentence. Same harness as <see cref="Rfc9111ConformanceTests"/>: a real sidekick, s3rver as the
/// store (MIN_SIZE=0), a raw-socket origin.
/// </summary>
public sealed class Rfc9111RequirementsTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private const string Body = "0123456789 stored body 0123456789";

    // ---- RFC 9110 §15.4.5: a 304 the cache generates ----

    [Fact]
    public async Task Rfc9110_15_4_5_a_304_from_the_cache_carries_Content_Location_and_every_Cache_Control_and_Vary_line()
    {
        // "The server generating a 304 response MUST generate any of the following header fields that would have been
        // sent in a 200 (OK) response to the same request: Content-Location, Date, ETag, and Vary; Cache-Control and
        // Expires." The 200 the cache sends for this entry carries all of them (checked first).
        var path = Unique("/review-304-fields");
        await using var origin = new Origin(_ => Response(200,
            "Cache-Control: max-age=600\r\nCache-Control: public\r\nVary: Accept\r\nVary: X-Other\r\nContent-Location: /review/representation\r\nETag: \"c\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");

        var hit = await sidekick.SendAsync("GET", path);
        Assert.Equal(["HIT"], hit.Values("X-Cache"));
        Assert.Equal(["/review/representation"], hit.Values("Content-Location"));
        Assert.Equal(["max-age=600", "public"], hit.Values("Cache-Control"));

        var notModified = await sidekick.SendAsync("GET", path, "If-None-Match: \"c\"");
        Assert.Equal(304, notModified.Status);
        Assert.True(notModified.Values("Content-Location") is ["/review/representation"], "Content-Location missing from the cache's 304:\n" + notModified.Head);
        Assert.True(string.Join(",", notModified.Values("Cache-Control")).Contains("public", StringComparison.Ordinal), "second Cache-Control line lost:\n" + notModified.Head);
        Assert.True(string.Join(",", notModified.Values("Vary")).Contains("X-Other", StringComparison.Ordinal), "second Vary line lost:\n" + notModified.Head);
    }

    // ---- RFC 9110 §14.2: Range is defined for GET only ----

    [Theory]
    [InlineData("bytes=0-2")]
    [InlineData("bytes=900-999")]
    public async Task Rfc9110_14_2_Range_on_a_HEAD_hit_is_ignored(string range)
    {
        // "A server MUST ignore a Range header field received with a request method that is unrecognized or for which
        // range handling is not defined. For this specification, GET is the only method for which range handling is
        // defined." A HEAD answered from the cache got 206 (or 416) instead of the 200 a GET without Range gets.
        var path = Unique("/review-head-range");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=600\r\nETag: \"h\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");

        var head = await sidekick.SendAsync("HEAD", path, $"Range: {range}");
        Assert.Equal(["HIT"], head.Values("X-Cache"));
        Assert.True(head.Status == 200, $"HEAD with Range: {range} answered from the cache:\n{head.Head}");
        Assert.Empty(head.Values("Content-Range"));
    }

    // ---- RFC 9111 §3, §5.2.2.3 must-understand ----

    [Fact]
    public async Task Storing_responses_3_must_understand_with_a_status_the_cache_does_not_understand_is_not_stored()
    {
        // §3: "A cache MUST NOT store a response to a request unless: ... if the response status code is 206 or 304, or
        // the must-understand cache directive (see Section 5.2.2.3) is present: the cache understands the response
        // status code". 299 is not a registered status; its caching requirements cannot be understood.
        var path = Unique("/review-must-understand");
        await using var origin = new Origin(_ => Response(299, "Cache-Control: max-age=600, must-understand\r\nETag: \"m\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        // Counted as not stored, for its status, once its answer was judged; a fill would have been counted instead.
        await Eventually.WaitUntilAsync(() => sidekick.Metrics.NotStoredOf(Sidekick.Caching.NotStoredReason.Status) + sidekick.Metrics.Fills > 0, what: "the answer's verdict");
        Assert.Equal(0, sidekick.Metrics.Fills);

        var again = await sidekick.SendAsync("GET", path);
        Assert.True(origin.Asked(path) == 2, $"a 299 with must-understand was stored and reused:\n{again.Head}");
    }

    [Fact]
    public async Task Must_understand_5_2_2_3_lets_no_store_be_ignored_for_a_status_the_cache_understands()
    {
        // §5.2.2.3 (SHOULD): "When a cache that implements the must-understand directive receives a response that
        // includes it, the cache SHOULD ignore the no-store directive if it understands and implements the status
        // code's caching requirements." A 200 with "max-age=600, must-understand, no-store" is therefore reusable.
        var path = Unique("/review-must-understand-200");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=600, must-understand, no-store\r\nETag: \"m\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await Eventually.WaitUntilAsync(() => sidekick.Metrics.NotStoredOf(Sidekick.Caching.NotStoredReason.NoStore) + sidekick.Metrics.FillsCompleted > 0, what: "the answer's verdict");

        var again = await sidekick.SendAsync("GET", path);
        Assert.True(again.Values("X-Cache") is ["HIT"], $"must-understand + no-store on a 200 not stored:\n{again.Head}");
    }

    // ---- RFC 9110 §6.6.1 Date ----

    [Fact]
    public async Task Rfc9110_6_6_1_a_response_stored_without_Date_keeps_the_Date_of_its_receipt()
    {
        // "A recipient with a clock that receives a response message without a Date header field MUST record the time
        // it was received and append a corresponding Date header field to the message's header section if it is
        // cached or forwarded downstream." The HIT carried the time of serving instead, so Date + Age was in the future.
        var path = Unique("/review-no-date");
        await using var origin = new Origin(_ => Response(200, "Cache-Control: max-age=600\r\nETag: \"d\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        var miss = await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");
        await Task.Delay(2500);

        var hit = await sidekick.SendAsync("GET", path);
        Assert.Equal(["HIT"], hit.Values("X-Cache"));
        var received = DateTimeOffset.Parse(miss.Values("Date").Single(), CultureInfo.InvariantCulture);
        var served = DateTimeOffset.Parse(hit.Values("Date").Single(), CultureInfo.InvariantCulture);
        var age = long.Parse(hit.Values("Age").Single(), CultureInfo.InvariantCulture);
        Assert.True(served <= received.AddSeconds(1), $"the stored response's Date moved from {received:r} (its receipt) to {served:r} (Age {age})");
    }

    // ---- RFC 9111 §1.2.2 delta-seconds overflow ----

    [Theory]
    [InlineData("Cache-Control: max-age=99999999999999999999", true)]
    [InlineData("Cache-Control: s-maxage=99999999999999999999", true)]
    [InlineData("Cache-Control: max-age=600\r\nAge: 99999999999999999999", false)]
    public async Task Delta_seconds_1_2_2_beyond_the_largest_integer_count_as_2_pow_31(string fields, bool fresh)
    {
        // §1.2.2: "If a cache receives a delta-seconds value greater than the greatest integer it can represent, or if
        // any of its subsequent calculations overflows, the cache MUST consider the value to be 2147483648 (2^31) or
        // the greatest positive integer it can conveniently represent." (§5.1 says the same for Age.) A max-age past
        // long's range made the response stale; an Age past it was ignored, so a response older than any lifetime was
        // served fresh.
        var path = Unique("/review-overflow");
        await using var origin = new Origin(_ => Response(200, $"{fields}\r\nETag: \"o\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");

        var again = await sidekick.SendAsync("GET", path);
        Assert.True(origin.Asked(path) == (fresh ? 1 : 2), $"{fields.Replace("\r\n", "; ", StringComparison.Ordinal)} should be {(fresh ? "fresh" : "stale")}:\n{again.Head}");
    }

    // ---- RFC 9110 §5.6.7 / RFC 9111 §5.3: HTTP-date is case-sensitive ----

    [Fact]
    public async Task Expires_5_3_with_an_upper_case_month_is_not_an_HTTP_date()
    {
        // RFC 9110 §5.6.7: "HTTP-date is case sensitive" (month = %s"Dec"); RFC 9111 §5.3: "A cache recipient MUST
        // interpret invalid date formats, especially the value "0", as representing a time in the past". The lower-case
        // spelling is refused already; "DEC" is taken as a date (TryParseExact matches month names case-insensitively).
        var path = Unique("/review-expires-case");
        await using var origin = new Origin(_ => Response(200, "Expires: Thu, 01 DEC 2095 16:00:00 GMT\r\nETag: \"x\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");

        var again = await sidekick.SendAsync("GET", path);
        Assert.True(origin.Asked(path) == 2, $"\"Thu, 01 DEC 2095 16:00:00 GMT\" taken for an HTTP-date:\n{again.Head}");
    }

    // ---- RFC 9111 §4.3.2: If-Match / If-Unmodified-Since are not the cache's to evaluate ----

    [Fact]
    public async Task Handling_a_received_validation_request_4_3_2_If_Match_is_not_evaluated_by_the_cache()
    {
        // §4.3.2: "A cache MUST NOT evaluate conditional header fields that only apply to an origin server ... In
        // summary, the If-Match and If-Unmodified-Since conditional header fields are not applicable to a cache".
        // The origin now holds version "v2" (written past this sidecar); a client pinning "v2" with If-Match (as SDKs
        // do on every ranged read) got the cache's 412 while the entry for "v1" stayed fresh, though the origin serves it.
        var path = Unique("/review-if-match");
        var version = 1;
        await using var origin = new Origin(_ =>
        {
            var current = Volatile.Read(ref version);
            return Response(200, $"Cache-Control: max-age=600\r\nETag: \"v{current}\"\r\n", $"body-v{current}");
        });
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "v1's fill");
        Volatile.Write(ref version, 2);

        var pinned = await sidekick.SendAsync("GET", path, "If-Match: \"v2\"");
        Assert.True(pinned.Status == 200 && pinned.Body == "body-v2", $"If-Match \"v2\" answered by the cache:\n{pinned.Head}{pinned.Body}");
    }

    // ---- RFC 9111 §5.2.2.4 no-cache, RFC 9110 §5.3: every Cache-Control line, also while a fill runs ----

    [Fact]
    public async Task No_cache_5_2_2_4_a_fill_in_flight_honours_no_cache_in_a_second_Cache_Control_line()
    {
        // §5.2.2.4: "the no-cache response directive ... indicates that the response MUST NOT be used to satisfy any
        // other request without forwarding it for validation and receiving a successful response". Once stored, the
        // entry is revalidated (CachedResponse.CacheControl() reads every line), but a request arriving while the fill
        // streams is judged by ResponseCache.ReadFillAsync on the first Cache-Control line only, and served a HIT.
        var path = Unique("/review-fill-no-cache");
        var body = new string('x', 200);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var wire = System.Text.Encoding.Latin1.GetBytes(
            $"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nCache-Control: no-cache\r\nETag: \"n\"\r\nContent-Length: {body.Length}\r\n\r\n{body}");
        var headLength = wire.Length - body.Length;
        var first = true;
        await using var origin = new Origin(_ =>
        {
            if (!first)
            {
                return Response(200, "Cache-Control: max-age=600\r\nCache-Control: no-cache\r\nETag: \"n\"\r\n", body);
            }

            first = false;
            // The head and half the body at once, the rest when the test says so: the fill is running meanwhile.
            return new RawResponse(wire, BeforeEachByte: i => i == headLength + 100 ? release.Task : Task.CompletedTask);
        });
        await using var sidekick = await StartAsync(origin);
        var filling = sidekick.SendAsync("GET", path);
        await Eventually.WaitUntilAsync(() => sidekick.Metrics.Fills > 0, what: "the fill's start");
        await Task.Delay(300);

        var during = sidekick.SendAsync("GET", path);
        await Task.Delay(1000);
        release.TrySetResult();
        var answer = await during;
        await filling;

        Assert.True(origin.Asked(path) == 2, $"served from the running fill without validation (no-cache in the second line):\n{answer.Head}");
    }

    // ---- RFC 9111 §5.2.1.1, §5.2.1.3 request directives vs stale-while-revalidate ----

    [Theory]
    [InlineData("Cache-Control: max-age=0")]
    [InlineData("Cache-Control: min-fresh=1000")]
    public async Task Max_age_5_2_1_1_and_min_fresh_5_2_1_3_a_request_that_refuses_the_stored_copy_is_not_answered_with_it_under_stale_while_revalidate(string directive)
    {
        // §5.2.1.1: max-age "indicates that the client prefers a response whose age is less than or equal to the
        // specified number of seconds. Unless the max-stale request directive is also present, the client does not wish
        // to receive a stale response." (min-fresh, §5.2.1.3, likewise.) RFC 5861 §3 lets a cache serve a *stale*
        // response while it revalidates; CachePolicy.Decide computes staleness as age - lifetime, negative for this
        // fresh entry, so "staleness <= stale-while-revalidate" holds and a reload (max-age=0) gets the old copy.
        var path = Unique("/review-swr-reload");
        var version = 1;
        await using var origin = new Origin(_ =>
        {
            var current = Volatile.Read(ref version);
            return Response(200, $"Cache-Control: max-age=600, stale-while-revalidate=600\r\nETag: \"v{current}\"\r\n", $"body-v{current}");
        });
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "v1's fill");
        Volatile.Write(ref version, 2);

        var reload = await sidekick.SendAsync("GET", path, directive);
        Assert.True(reload.Body == "body-v2", $"{directive} answered with the stored copy:\n{reload.Head}{reload.Body}");
    }

    // ---- RFC 9111 §3.1: the header fields a HIT serves ----

    [Fact]
    public async Task Storing_header_fields_3_1_a_hit_serves_the_received_header_fields()
    {
        // §3.1: "Caches MUST include all received response header fields -- including unrecognized ones -- when storing
        // a response". The MISS passes the origin's Server, an empty-valued field and Accept-Ranges: none; the HIT of
        // the same response drops the first two and turns the third into "bytes".
        var path = Unique("/review-fields");
        await using var origin = new Origin(_ => Response(200,
            "Cache-Control: max-age=600\r\nServer: MinIO\r\nX-Empty:\r\nAccept-Ranges: none\r\nETag: \"f\"\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        var miss = await sidekick.SendAsync("GET", path);
        Assert.Contains("MinIO", miss.Values("Server"));
        Assert.Equal([""], miss.Values("X-Empty"));
        Assert.Equal(["none"], miss.Values("Accept-Ranges"));
        await sidekick.UntilFilledAsync(1, "the fill");

        var hit = await sidekick.SendAsync("GET", path);
        Assert.Equal(["HIT"], hit.Values("X-Cache"));
        Assert.True(
            hit.Values("Server").Contains("MinIO") && hit.Values("X-Empty") is [""] && hit.Values("Accept-Ranges") is ["none"],
            $"MISS:\n{miss.Head}\nHIT:\n{hit.Head}");
    }

    // ---- SHOULD-level items (RFC 9111 §4.3.1, §4.3.2, §4.3.5) ----

    [Fact]
    public async Task Sending_a_validation_request_4_3_1_sends_the_ETag_alone_so_an_object_overwritten_within_the_second_is_not_confirmed()
    {
        // §4.3.1 says a cache SHOULD send If-Modified-Since beside If-None-Match for a request of the whole body. An
        // origin must then ignore the date (RFC 9110 §13.1.3), but MinIO evaluates each on its own: a tag that no longer
        // matches, then a date the object was not modified after (to the second), answers 304. MinIO's 304 carries the
        // current ETag, which the cache checks (§4.3.4); an origin that answers the same way without one (this one) would
        // have an object overwritten within the second of the stored Last-Modified confirmed by the date, and its old
        // bytes served as current. So the ETag is sent alone.
        var path = Unique("/review-ims");
        const string lastModified = "Mon, 01 Jan 2024 00:00:00 GMT";
        var version = 1;
        await using var origin = new Origin(request =>
        {
            var etag = $"\"v{Volatile.Read(ref version)}\"";
            var unchangedTag = request.Head.Contains($"\r\nIf-None-Match: {etag}\r\n", StringComparison.OrdinalIgnoreCase);
            var unchangedDate = request.Head.Contains($"\r\nIf-Modified-Since: {lastModified}\r\n", StringComparison.OrdinalIgnoreCase);
            return unchangedTag || unchangedDate
                ? Response(304, unchangedTag ? $"ETag: {etag}\r\n" : "", "")
                : Response(200, $"Cache-Control: max-age=0\r\nETag: {etag}\r\nLast-Modified: {lastModified}\r\n", $"body-v{Volatile.Read(ref version)}");
        });
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "v1's fill");

        Volatile.Write(ref version, 2); // overwritten within the same second: same Last-Modified, another ETag
        var answer = await sidekick.SendAsync("GET", path);
        Assert.True(answer.Body == "body-v2", $"the old version was confirmed by its date:\n{answer.Head}{answer.Body}");
        var conditional = origin.Requests.Last(r => r.Target == path).Head;
        Assert.DoesNotContain("If-Modified-Since", conditional, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Handling_a_received_validation_request_4_3_2_If_Modified_Since_on_an_entry_without_Last_Modified_is_evaluated_against_its_Date()
    {
        // §4.3.2: "If a request contains an If-Modified-Since header field and the Last-Modified header field is not
        // present in a stored response, a cache SHOULD use the stored response's Date field value (or, if no Date field
        // is present, the time that the stored response was received) to evaluate the conditional."
        var path = Unique("/review-ims-date");
        var date = DateTimeOffset.UtcNow.AddSeconds(-100).ToString("r", CultureInfo.InvariantCulture);
        await using var origin = new Origin(_ => Response(200, $"Cache-Control: max-age=600\r\nDate: {date}\r\n", Body));
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "the fill");

        var answer = await sidekick.SendAsync("GET", path, $"If-Modified-Since: {DateTimeOffset.UtcNow.ToString("r", CultureInfo.InvariantCulture)}");
        Assert.True(answer.Status == 304, answer.Head);
    }

    [Fact]
    public async Task Freshening_with_HEAD_4_3_5_a_HEAD_200_with_another_validator_invalidates_the_stored_GET()
    {
        // §4.3.5: "When a cache makes an inbound HEAD request for a target URI and receives a 200 (OK) response, the
        // cache SHOULD update or invalidate each of its stored GET responses that could have been selected for that
        // request." The HEAD showed "v2"; the stale "v1" entry is still served to a request that accepts staleness.
        var path = Unique("/review-head-freshening");
        var version = 1;
        await using var origin = new Origin(_ =>
        {
            var current = Volatile.Read(ref version);
            return Response(200, $"Cache-Control: max-age=0\r\nETag: \"v{current}\"\r\n", $"body-v{current}");
        });
        await using var sidekick = await StartAsync(origin);
        await sidekick.SendAsync("GET", path);
        await sidekick.UntilFilledAsync(1, "v1's fill");
        Volatile.Write(ref version, 2);

        var head = await sidekick.SendAsync("HEAD", path);
        Assert.Equal(["\"v2\""], head.Values("ETag"));
        await Task.Delay(500);
        var stale = await sidekick.SendAsync("GET", path, "Cache-Control: max-stale=3600");
        Assert.True(stale.Body == "body-v2", $"after a HEAD saw \"v2\": {stale.Head}{stale.Body}");
    }

    // ---- the harness (as Rfc9111ConformanceTests) ----

    private static string Unique(string name) => $"{name}-{Guid.NewGuid():N}";

    private static RawResponse Response(int status, string fields, string body) =>
        RawResponse.Text(status is 204 or 304
            ? $"HTTP/1.1 {status} Status\r\n{fields}\r\n"
            : $"HTTP/1.1 {status} Status\r\n{fields}Content-Length: {body.Length}\r\n\r\n{body}");

    private async Task<Running> StartAsync(Origin origin)
    {
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_MIN_SIZE"] = "0";
        var (instance, client) = await fixture.StartSidekickAsync([origin.Url], SidekickHarness.FastOptions, environment);
        client.Dispose();
        return new Running(instance);
    }

    private sealed class Origin(Func<RawRequest, RawResponse> respond) : IAsyncDisposable
    {
        private readonly RawBackend _backend = new(respond);

        public Uri Url => _backend.Url;

        public ConcurrentQueue<RawRequest> Requests => _backend.Requests;

        public int Asked(string path) => _backend.Requests.Count(r => r.Target == path);

        public ValueTask DisposeAsync() => _backend.DisposeAsync();
    }

    private sealed class Running(SidekickInstance instance) : IAsyncDisposable
    {
        public Sidekick.Caching.CacheMetrics Metrics => instance.Server.Cache!.Metrics;

        public Task<RawAnswer> SendAsync(string method, string target, params string[] fields) => method == "HEAD"
            ? HeadAsync($"{method} {target} HTTP/1.1\r\nHost: rfc.example\r\n{string.Concat(fields.Select(f => f + "\r\n"))}\r\n")
            : RawClient.ExchangeAsync(instance.Server.BaseAddress.Port, $"{method} {target} HTTP/1.1\r\nHost: rfc.example\r\n{string.Concat(fields.Select(f => f + "\r\n"))}\r\n");

        /// <summary>A HEAD's answer: the head alone (RawClient would wait for Content-Length bytes of body).</summary>
        private async Task<RawAnswer> HeadAsync(string request)
        {
            using var tcp = new System.Net.Sockets.TcpClient();
            await tcp.ConnectAsync(System.Net.IPAddress.Loopback, instance.Server.BaseAddress.Port);
            var stream = tcp.GetStream();
            await stream.WriteAsync(System.Text.Encoding.Latin1.GetBytes(request));
            var received = new List<byte>();
            var buffer = new byte[8192];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            while (System.Text.Encoding.Latin1.GetString(received.ToArray()).IndexOf("\r\n\r\n", StringComparison.Ordinal) < 0)
            {
                var read = await stream.ReadAsync(buffer, timeout.Token);
                if (read == 0)
                {
                    break;
                }

                received.AddRange(buffer.AsSpan(0, read));
            }

            var head = System.Text.Encoding.Latin1.GetString(received.ToArray());
            return new RawAnswer(int.Parse(head.AsSpan(9, 3), CultureInfo.InvariantCulture), head, "", null);
        }

        public async Task UntilFilledAsync(long fills, string what)
        {
            var deadline = Environment.TickCount64 + 15000;
            while (Metrics.FillsCompleted < fills)
            {
                Assert.True(Environment.TickCount64 < deadline, $"timed out waiting for {what} to be stored");
                await Task.Delay(25);
            }
        }

        public ValueTask DisposeAsync() => instance.DisposeAsync();
    }
}
