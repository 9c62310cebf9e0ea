using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Sidekick.Caching;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Caching;

/// <summary>
/// Cache poisoning through the entry's name: two requests the origin answers differently must never share an
/// entry, or one client chooses what the other is served. Hostile requests fill the cache first; then the victim's
/// request, which names the other answer, must get the origin's bytes for it, byte for byte, and reach the origin.
/// The origin here answers with the first value of a repeated parameter (as many servers read one), reads a
/// parameter named <c>Expires</c> as content (as any service that is not S3 may) and a GET's content (as search APIs
/// do), tells a header sent empty from one not sent, and changes what it varies on; each time its Vary says so.
/// </summary>
public sealed class CacheKeyPoisoningTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    [Fact]
    public async Task A_repeated_parameter_in_another_order_is_another_entry()
    {
        await using var origin = await QueryOrigin.StartAsync();
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;

        await FillAsync(instance, client, "/report?v=evil&v=good", "v=evil");

        using var victim = await client.GetAsync("/report?v=good&v=evil");
        Assert.Equal("v=good", await victim.Content.ReadAsStringAsync());
        Assert.Equal("MISS", Outcome(victim));
        Assert.Equal(1, origin.Asked("/report?v=good&v=evil"));
    }

    [Fact]
    public async Task A_parameter_named_like_a_presigned_one_is_part_of_the_entry_without_a_signature()
    {
        await using var origin = await QueryOrigin.StartAsync();
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;

        await FillAsync(instance, client, "/page?Expires=evil&X-Amz-Date=evil", "Expires=evil");

        using var victim = await client.GetAsync("/page");
        Assert.Equal("plain", await victim.Content.ReadAsStringAsync());
        Assert.Equal("MISS", Outcome(victim));
        Assert.Equal(1, origin.Asked("/page"));
    }

    [Fact]
    public async Task Vary_4_1_a_header_sent_empty_does_not_select_the_entry_of_a_request_without_it()
    {
        // RFC 9111 §4.1: a header field absent from the request matches only one absent from the stored request.
        await using var origin = await QueryOrigin.StartAsync();
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;

        await FillAsync(instance, client, "/vary", "X-Mode empty", request => request.Headers.TryAddWithoutValidation("X-Mode", ""));

        using var victim = await client.GetAsync("/vary");
        Assert.Equal("X-Mode absent", await victim.Content.ReadAsStringAsync());
        Assert.Equal("MISS", Outcome(victim));
        Assert.Equal(2, origin.Asked("/vary"));

        // And the other way round: the entry of the request without it does not answer the empty one.
        await FillAsync(instance, client, "/vary2", "X-Mode absent");
        using var empty = new HttpRequestMessage(HttpMethod.Get, "/vary2");
        empty.Headers.TryAddWithoutValidation("X-Mode", "");
        using var second = await client.SendAsync(empty);
        Assert.Equal("X-Mode empty", await second.Content.ReadAsStringAsync());
        Assert.Equal("MISS", Outcome(second));
    }

    [Fact]
    public async Task Vary_4_1_a_variant_is_served_only_to_a_request_its_own_Vary_selects()
    {
        // The origin changes what it varies on (X-A, then X-B). A variant stored under the first Vary must not answer
        // a request whose X-B happens to carry the value its X-A had: the stored response's own Vary decides (§4.1).
        await using var origin = await QueryOrigin.StartAsync();
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;

        await FillAsync(instance, client, "/shift", "X-A=v1", request => request.Headers.Add("X-A", "v1"));
        origin.VaryOnB = true;
        await FillAsync(instance, client, "/shift", "X-B=other", request => request.Headers.Add("X-B", "other"));

        using var victim = new HttpRequestMessage(HttpMethod.Get, "/shift");
        victim.Headers.Add("X-B", "v1");
        using var response = await client.SendAsync(victim);
        Assert.Equal("X-B=v1", await response.Content.ReadAsStringAsync());
        Assert.Equal("MISS", Outcome(response));
    }

    [Fact]
    public async Task A_GET_with_content_is_neither_stored_nor_answered_from_the_cache()
    {
        // Search APIs take their query as a GET's content (RFC 9110 §9.3.1 gives it no meaning, but origins use it);
        // the entry's name does not cover it, so one client's content must never choose another's answer.
        await using var origin = await QueryOrigin.StartAsync();
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;

        using (var plain = await client.GetAsync("/search"))
        {
            Assert.Equal("MISS", Outcome(plain));
        }

        await Eventually.WaitUntilAsync(() => instance.Server.Cache!.FillsInFlight == 0);
        foreach (var query in new[] { "evil", "good" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/search") { Content = new StringContent(query) };
            using var response = await client.SendAsync(request);
            Assert.Equal("content=" + query, await response.Content.ReadAsStringAsync());
            Assert.Equal("BYPASS", Outcome(response));
        }

        await Eventually.WaitUntilAsync(() => instance.Server.Cache!.FillsInFlight == 0);
        using var again = await client.GetAsync("/search");
        Assert.Equal("content=", await again.Content.ReadAsStringAsync());
        Assert.Equal("HIT", Outcome(again));
        Assert.Equal(3, origin.Asked("/search"));

        // Content-Length: 0, as some SDKs send on every GET, is no content: still answered from the cache.
        using var socket = new System.Net.Sockets.TcpClient();
        await socket.ConnectAsync(client.BaseAddress!.Host, client.BaseAddress.Port);
        var stream = socket.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET /search HTTP/1.1\r\nHost: {client.BaseAddress.Authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
        var answer = await new StreamReader(stream, Encoding.ASCII).ReadToEndAsync();
        Assert.StartsWith("HTTP/1.1 200", answer, StringComparison.Ordinal);
        Assert.Contains("X-Cache: HIT\r\n", answer, StringComparison.Ordinal);
        Assert.EndsWith("\r\n\r\ncontent=", answer, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("X-Forwarded-Proto", "javascript")]
    [InlineData("X-Forwarded-Scheme", "nothttps")]
    [InlineData("X-Forwarded-Port", "1337")]
    [InlineData("X-Forwarded-Prefix", "/evil")]
    [InlineData("Forwarded", "proto=http;host=evil.example")]
    [InlineData("X-Original-URL", "/admin")]
    [InlineData("X-Rewrite-URL", "/admin")]
    [InlineData("X-HTTP-Method-Override", "DELETE")]
    [InlineData("x-host", "evil.example")]
    [InlineData("X_Forwarded_Host", "evil.example")]
    [InlineData("X_Forwarded_Proto", "javascript")]
    [InlineData("X-Forwarded-Path", "/evil")]
    [InlineData("X-Original-Host", "evil.example")]
    [InlineData("Front-End-Https", "off")]
    public async Task A_request_field_the_origin_answers_by_but_the_entry_is_not_named_by_bypasses_the_cache(string field, string value)
    {
        // The origin builds its answer from the field, as frameworks behind proxies build links and redirects from the
        // forwarded scheme and port, or route by an original URL or a method override. Were the hostile answer stored,
        // it would be served to every client asking for /reflect (web cache poisoning through unkeyed input).
        await using var origin = await QueryOrigin.StartAsync();
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;

        using (var hostile = Reflected(field, value))
        using (var response = await client.SendAsync(hostile))
        {
            Assert.Equal("BYPASS", Outcome(response));
            Assert.Equal($"{field.ToLowerInvariant()}={value}", await response.Content.ReadAsStringAsync());
        }

        // Nothing of it was stored: the victim's request reaches the origin and gets the plain answer, which is stored.
        await FillAsync(instance, client, "/reflect", "plain");
        Assert.Equal(2, origin.Asked("/reflect"));

        // Nor is the stored entry served to it: the origin answers it again.
        using (var again = Reflected(field, value))
        using (var response = await client.SendAsync(again))
        {
            Assert.Equal("BYPASS", Outcome(response));
            Assert.Equal($"{field.ToLowerInvariant()}={value}", await response.Content.ReadAsStringAsync());
        }

        Assert.Equal(3, origin.Asked("/reflect"));
        Assert.Equal(2, instance.Server.Cache!.Metrics.NotStoredOf(NotStoredReason.UnkeyedHeader));
        var metrics = await client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains("sidekick_cache_not_stored_total{reason=\"unkeyed_header\"} 2\n", metrics, StringComparison.Ordinal);

        static HttpRequestMessage Reflected(string field, string value)
        {
            var request = new HttpRequestMessage(HttpMethod.Get, "/reflect");
            Assert.True(request.Headers.TryAddWithoutValidation(field, value));
            return request;
        }
    }

    [Fact]
    public async Task A_field_the_clients_Connection_names_never_selects_an_entry_it_did_not_reach_the_origin_in()
    {
        // Connection names fields hop-by-hop (RFC 9110 §7.6.1): sidekick drops them on the way to the origin. The
        // entry's variant was chosen by the request as the client sent it, so an answer to a request without X-A was
        // stored as the answer for X-A: one, and served to every client sending it (Origin and CORS, Accept-Encoding).
        await using var origin = await QueryOrigin.StartAsync();
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;

        string hostileOutcome;
        using (var hostile = new HttpRequestMessage(HttpMethod.Get, "/shift"))
        {
            Assert.True(hostile.Headers.TryAddWithoutValidation("X-A", "one"));
            Assert.True(hostile.Headers.TryAddWithoutValidation("Connection", "X-A"));
            using var response = await client.SendAsync(hostile);
            Assert.Equal("X-A=", await response.Content.ReadAsStringAsync());
            hostileOutcome = Outcome(response);
        }

        await Eventually.WaitUntilAsync(() => instance.Server.Cache!.FillsInFlight == 0);
        using (var victim = new HttpRequestMessage(HttpMethod.Get, "/shift"))
        {
            Assert.True(victim.Headers.TryAddWithoutValidation("X-A", "one"));
            using var response = await client.SendAsync(victim);
            Assert.Equal("X-A=one", await response.Content.ReadAsStringAsync());
        }

        Assert.Equal(2, origin.Asked("/shift"));
        Assert.Equal("BYPASS", hostileOutcome);
    }

    [Fact]
    public async Task An_object_read_with_its_SSE_C_key_is_never_kept_in_the_bucket_nor_served_to_a_request_without_it()
    {
        // SSE-C: the origin decrypts with the key the request carries, and answers a request without it with an error.
        // Kept in the bucket, the plaintext would be at rest unencrypted and served to whoever asks for its name.
        await using var origin = await QueryOrigin.StartAsync();
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;

        using (var keyed = WithCustomerKey())
        using (var response = await client.SendAsync(keyed))
        {
            Assert.Equal("BYPASS", Outcome(response));
            Assert.Equal("plaintext", await response.Content.ReadAsStringAsync());
        }

        await Eventually.WaitUntilAsync(() => instance.Server.Cache!.FillsInFlight == 0);
        using (var victim = await client.GetAsync("/sse-c"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, victim.StatusCode);
            Assert.Equal("key required", await victim.Content.ReadAsStringAsync());
        }

        // And what the cache holds for the name (the origin's fresh 400, stored) never answers a request with the key.
        await Eventually.WaitUntilAsync(() => instance.Server.Cache!.FillsInFlight == 0);
        using (var again = WithCustomerKey())
        using (var response = await client.SendAsync(again))
        {
            Assert.Equal("BYPASS", Outcome(response));
            Assert.Equal("plaintext", await response.Content.ReadAsStringAsync());
        }

        Assert.Equal(3, origin.Asked("/sse-c"));
        Assert.Equal(2, instance.Server.Cache!.Metrics.NotStoredOf(NotStoredReason.CustomerKey));

        static HttpRequestMessage WithCustomerKey()
        {
            var request = new HttpRequestMessage(HttpMethod.Get, "/sse-c");
            request.Headers.Add("X-Amz-Server-Side-Encryption-Customer-Algorithm", "AES256");
            request.Headers.Add("X-Amz-Server-Side-Encryption-Customer-Key", Convert.ToBase64String(new byte[32]));
            request.Headers.Add("X-Amz-Server-Side-Encryption-Customer-Key-MD5", "cLyPS3KoaSFGi/joRB3OUQ=="); // the key's MD5, as S3 asks
            return request;
        }
    }

    [Fact]
    public async Task X_Forwarded_Host_bypasses_the_cache_only_where_it_reaches_the_origin_as_sent()
    {
        await using var origin = await QueryOrigin.StartAsync();
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;

        // With a Host, sidekick sets X-Forwarded-Host to it: the client's value never reaches the origin, and the
        // answer is the one every client asking with that Host gets, so it is stored.
        await FillAsync(instance, client, "/reflect-host", $"x-forwarded-host={client.BaseAddress!.Authority}",
            request => request.Headers.TryAddWithoutValidation("X-Forwarded-Host", "evil.example"));

        // HTTP/1.0 without Host: the client's X-Forwarded-Host goes to the origin as it came, so the cache is bypassed.
        using var socket = new System.Net.Sockets.TcpClient();
        await socket.ConnectAsync(client.BaseAddress.Host, client.BaseAddress.Port);
        var stream = socket.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes("GET /reflect-host HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n"));
        var answer = await new StreamReader(stream, Encoding.ASCII).ReadToEndAsync();
        Assert.Contains("X-Cache: BYPASS\r\n", answer, StringComparison.Ordinal);
        Assert.EndsWith("\r\n\r\nx-forwarded-host=evil.example", answer, StringComparison.Ordinal);
        Assert.Equal(2, origin.Asked("/reflect-host"));
    }

    [Fact]
    public async Task Sidecars_in_front_of_different_origins_sharing_a_bucket_do_not_serve_each_others_entries()
    {
        // Every sidecar's clients call it localhost:8080, so Host and target alone name one entry for production and
        // staging. With the default settings each sidecar keeps its entries in a folder named by its backends: a
        // sidecar of the same origin shares them, one of another origin gets its own origin's bytes.
        await using var production = await QueryOrigin.StartAsync("production");
        await using var staging = await QueryOrigin.StartAsync("staging");
        var environment = fixture.Environment();
        environment.Remove("SIDEKICK_CACHE_NAMESPACE");
        environment["SIDEKICK_CACHE_MIN_SIZE"] = "0";
        var firstOutput = new StringWriter();
        var (first, firstClient) = await fixture.StartSidekickAsync([production.Url], SidekickHarness.FastOptions, environment, stdout: firstOutput);
        await using var firstRunning = first;
        var (other, otherClient) = await fixture.StartSidekickAsync([staging.Url], SidekickHarness.FastOptions, environment);
        await using var otherRunning = other;
        var (second, secondClient) = await fixture.StartSidekickAsync([production.Url], SidekickHarness.FastOptions, environment);
        await using var secondRunning = second;
        foreach (var client in (HttpClient[])[firstClient, otherClient, secondClient])
        {
            client.DefaultRequestHeaders.Host = "localhost:8080";
        }

        await FillAsync(first, firstClient, "/object", "production: plain");

        using var victim = await otherClient.GetAsync("/object");
        Assert.Equal("staging: plain", await victim.Content.ReadAsStringAsync());
        Assert.Equal("MISS", Outcome(victim));
        Assert.Equal(1, staging.Asked("/object"));

        using var shared = await secondClient.GetAsync("/object");
        Assert.Equal("production: plain", await shared.Content.ReadAsStringAsync());
        Assert.Equal("HIT", Outcome(shared));
        Assert.Equal(1, production.Asked("/object"));

        // The folder each one uses, as /v1/state tells the operator.
        using var state = JsonDocument.Parse(await firstClient.GetStringAsync("/v1/state"));
        var folder = state.RootElement.GetProperty("cache").GetProperty("namespace").GetString();
        Assert.Matches("^[0-9a-f]{16}$", folder);
        Assert.Equal(folder, second.Server.Cache!.Namespace);
        Assert.NotEqual(folder, other.Server.Cache!.Namespace);
        var metrics = await firstClient.GetStringAsync("/.prometheus/metrics");
        Assert.Contains($"sidekick_cache_info{{bucket=\"{CacheFixture.Bucket}\",namespace=\"{folder}\"}} 1\n", metrics, StringComparison.Ordinal);
        await Observability.MetricsAndTableTests.PromtoolAsync(metrics);
        Assert.Contains($"cache in bucket '{CacheFixture.Bucket}' of {fixture.S3.Url.ToString().TrimEnd('/')}, entries in folder '{folder}' (a hash of the backends; SIDEKICK_CACHE_NAMESPACE names it)",
            firstOutput.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Presigned_urls_for_one_object_share_its_entry_and_parameter_order_does_not_matter()
    {
        const string host = "minio.example:9000";
        var alice = CacheKey.For(host, "/b/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=A%2F1&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=aa");
        var bob = CacheKey.For(host, "/b/o?X-Amz-Signature=bb&X-Amz-Date=20260102T000000Z&X-Amz-Expires=600&X-Amz-Credential=B%2F2&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host");
        var sigV2 = CacheKey.For(host, "/b/o?AWSAccessKeyId=C&Expires=1700000000&Signature=cc");
        Assert.Equal(CacheKey.For(host, "/b/o"), alice);
        Assert.Equal(alice, bob);
        Assert.Equal(alice, sigV2);

        Assert.Equal(CacheKey.For(host, "/b/o?a=1&b=2"), CacheKey.For(host, "/b/o?b=2&a=1"));
        Assert.NotEqual(CacheKey.For(host, "/b/o?a=1&a=2"), CacheKey.For(host, "/b/o?a=2&a=1"));
        // The same name spelled two ways is the same parameter to an origin that decodes names (ASP.NET, most
        // frameworks), or matches them in any case: its values keep their order whichever spelling comes first.
        Assert.NotEqual(CacheKey.For(host, "/b/o?v=evil&%76=good"), CacheKey.For(host, "/b/o?%76=good&v=evil"));
        Assert.NotEqual(CacheKey.For(host, "/b/o?v=evil&V=good"), CacheKey.For(host, "/b/o?V=good&v=evil"));
        Assert.NotEqual(CacheKey.For(host, "/b/o?a+b=evil&a%20b=good"), CacheKey.For(host, "/b/o?a%20b=good&a+b=evil"));
        Assert.Equal(CacheKey.For(host, "/b/o?B=1&a=2"), CacheKey.For(host, "/b/o?a=2&B=1"));
        Assert.NotEqual(CacheKey.For(host, "/b/o"), CacheKey.For(host, "/b/o?Expires=1"));
        Assert.NotEqual(CacheKey.For(host, "/b/o"), CacheKey.For(host, "/b/o?X-Amz-Date=20260101T000000Z"));
    }

    private Task<(SidekickInstance Instance, HttpClient Client)> StartAsync(QueryOrigin origin)
    {
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_MIN_SIZE"] = "0";
        return fixture.StartSidekickAsync([origin.Url], SidekickHarness.FastOptions, environment);
    }

    /// <summary>The hostile request's answer, stored in the bucket: the next request for that target is a HIT.</summary>
    private static async Task FillAsync(SidekickInstance instance, HttpClient client, string target, string body, Action<HttpRequestMessage>? shape = null)
    {
        using (var request = new HttpRequestMessage(HttpMethod.Get, target))
        {
            shape?.Invoke(request);
            using var first = await client.SendAsync(request);
            Assert.Equal("MISS", Outcome(first));
            Assert.Equal(body, await first.Content.ReadAsStringAsync());
        }

        await Eventually.WaitUntilAsync(() => instance.Server.Cache!.FillsInFlight == 0);
        using var again = new HttpRequestMessage(HttpMethod.Get, target);
        shape?.Invoke(again);
        using var response = await client.SendAsync(again);
        Assert.Equal("HIT", Outcome(response));
        Assert.Equal(body, await response.Content.ReadAsStringAsync());
    }

    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    /// <summary>An origin whose answer is what the query asks for, fresh for ten minutes, counting the requests per target.</summary>
    private sealed class QueryOrigin : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> _asked = new();

        private readonly string? _name;

        private QueryOrigin(WebApplication app, int port, string? name)
        {
            _app = app;
            _name = name;
            Url = new Uri($"http://127.0.0.1:{port}");
        }

        public Uri Url { get; }

        public int Asked(string target) => _asked.GetValueOrDefault(target);

        /// <summary>Under /shift: vary on X-B from now on (X-A before).</summary>
        public bool VaryOnB { get; set; }

        /// <param name="name">Put before every answer, to tell this origin's bytes from another's.</param>
        public static async Task<QueryOrigin> StartAsync(string? name = null)
        {
            QueryOrigin? origin = null;
            var (app, port) = await LoopbackApp.StartAsync(context => origin!.AnswerAsync(context));
            origin = new QueryOrigin(app, port, name);
            return origin;
        }

        public ValueTask DisposeAsync() => _app.DisposeAsync();

        private async Task AnswerAsync(HttpContext context)
        {
            var request = context.Request;
            _asked.AddOrUpdate(request.Path + request.QueryString, 1, (_, n) => n + 1);
            var (body, varyOn) = request.Path.Value switch
            {
                // Whether X-Mode was sent at all, empty or not.
                "/vary" or "/vary2" => ("X-Mode " + (request.Headers.ContainsKey("X-Mode") ? "empty" : "absent"), "X-Mode"),
                // What it varies on changes while the test runs.
                "/shift" when VaryOnB => ("X-B=" + request.Headers["X-B"], "X-B"),
                "/shift" => ("X-A=" + request.Headers["X-A"], "X-A"),
                // The query as the GET's content.
                "/search" => ("content=" + await new StreamReader(request.Body).ReadToEndAsync(), null),
                // The first value of a repeated parameter wins; Expires selects content, as on any non-S3 service.
                _ when request.Query.TryGetValue("v", out var v) => ("v=" + v[0], null),
                _ when request.Query.TryGetValue("Expires", out var expires) => ("Expires=" + expires[0], null),
                // The first forwarding or routing field it finds, as the origin answers by it.
                "/reflect" => (ReflectedField(request.Headers) ?? "plain", null),
                "/reflect-host" => ("x-forwarded-host=" + request.Headers["X-Forwarded-Host"], null),
                // Decrypted with the request's SSE-C key; without it, an error.
                "/sse-c" => (request.Headers.ContainsKey("X-Amz-Server-Side-Encryption-Customer-Key") ? "plaintext" : "key required", null),
                _ => ("plain", (string?)null),
            };

            var bytes = Encoding.UTF8.GetBytes(_name is null ? body : $"{_name}: {body}");
            if (body == "key required")
            {
                context.Response.StatusCode = StatusCodes.Status400BadRequest;
            }

            context.Response.Headers.CacheControl = "max-age=600";
            if (varyOn is not null)
            {
                context.Response.Headers.Vary = varyOn;
            }

            context.Response.Headers.ETag = "\"" + Convert.ToHexStringLower(SHA256.HashData(bytes))[..16] + "\"";
            context.Response.ContentLength = bytes.Length;
            await context.Response.Body.WriteAsync(bytes);
        }

        /// <summary>A field origins behind proxies answer by (scheme, host, port, prefix, path, method), as "name=value".</summary>
        private static string? ReflectedField(IHeaderDictionary headers) =>
            new[]
            {
                "X-Forwarded-Proto", "X-Forwarded-Scheme", "X-Forwarded-Port", "X-Forwarded-Prefix", "Forwarded", "X-Original-URL",
                "X-Rewrite-URL", "X-HTTP-Method-Override", "X-Host", "X_Forwarded_Host", "X_Forwarded_Proto", "X-Forwarded-Path",
                "X-Original-Host", "Front-End-Https",
            }.Where(headers.ContainsKey).Select(name => $"{name.ToLowerInvariant()}={headers[name]}").FirstOrDefault();
    }
}
