using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Xml.Linq;

namespace Sidekick.Tests.Caching;

/// <summary>
/// What a write through the sidecar invalidates (RFC 9111 §4.4), as S3 clients write: every spelling of the object
/// (queries, percent-encoding, Host), the objects a DeleteObjects body names, every object of a bucket whose access
/// changed, the bucket's listings; and a hung store does not hold the writer's answer. The origin acts as MinIO does
/// where it matters: objects have no Cache-Control and are 10 days old, so heuristic freshness gives them a day.
/// </summary>
public sealed class WriteInvalidationTests(CacheFixture fixture) : IClassFixture<CacheFixture>
{
    private static string Outcome(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Cache", out var values) ? values.Single() : "(none)";

    private static void Writer(HttpRequestMessage request) =>
        request.Headers.TryAddWithoutValidation("Authorization", "AWS4-HMAC-SHA256 Credential=writer/20261207/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00");

    [Fact]
    public async Task A_DeleteObjects_through_the_sidecar_evicts_the_objects_its_body_names()
    {
        // aws s3 rm --recursive, aws s3 sync --delete, s3cmd del --recursive, rclone purge send DeleteObjects.
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/a.bin", 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/a.bin");

        using (var delete = new HttpRequestMessage(HttpMethod.Post, "/public?delete"))
        {
            Writer(delete);
            delete.Content = new StringContent("<Delete><Object><Key>a.bin</Key></Object><Quiet>false</Quiet></Delete>", Encoding.UTF8, "application/xml");
            using var deleted = await client.SendAsync(delete);
            Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        }

        Assert.False(origin.Objects.ContainsKey("/public/a.bin"));
        // The writer itself reads it back.
        using var read = new HttpRequestMessage(HttpMethod.Get, "/public/a.bin");
        Writer(read);
        using var after = await client.SendAsync(read);
        Assert.True(after.StatusCode == HttpStatusCode.NotFound, $"a deleted object was served: {(int)after.StatusCode} X-Cache {Outcome(after)}");
    }

    [Fact]
    public async Task A_DeleteObjects_key_with_xml_entities_evicts_the_entry_a_reader_filled_under_its_percent_encoded_spelling()
    {
        // The body escapes '&' as &amp;; botocore sends the object's GET as /data/a%26b%20%281%29.bin (s3cmd with trailing slash: POST /public/?delete).
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/dir/a&b (1).bin", 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/dir/a%26b%20(1).bin");

        using (var delete = new HttpRequestMessage(HttpMethod.Post, "/public/?delete"))
        {
            Writer(delete);
            delete.Content = new StringContent("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>dir/a&amp;b (1).bin</Key></Object></Delete>",
                Encoding.UTF8, "application/xml");
            using var deleted = await client.SendAsync(delete);
            Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        }

        Assert.False(origin.Objects.ContainsKey("/public/dir/a&b (1).bin"));
        using var after = await client.GetAsync("/public/dir/a%26b%20(1).bin");
        Assert.True(after.StatusCode == HttpStatusCode.NotFound, $"a deleted object was served: {(int)after.StatusCode} X-Cache {Outcome(after)}");
    }

    [Fact]
    public async Task A_DeleteObjects_of_a_thousand_keys_streamed_to_the_origin_evicts_each_of_them()
    {
        // Over 64 KiB: the body streams to the origin (not the buffered HTTP/1.1 path), and the copy is taken as it passes.
        await using var origin = await S3LikeOrigin.StartAsync();
        var keys = Enumerable.Range(0, 1000).Select(i => $"big/{i:D4}-{new string('x', 100)}.bin").ToArray();
        foreach (var key in keys)
        {
            origin.Put("/public/" + key, 16);
        }

        origin.Put("/public/" + keys[^1], 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/" + keys[^1]);
        using var store = fixture.Client();
        var entryName = CacheFixture.ObjectName(Sidekick.Caching.CacheKey.For("localhost:9000", "/public/" + keys[^1], withQuery: false));
        await store.GetObjectMetadataAsync(CacheFixture.Bucket, entryName); // the entry is in the bucket

        var body = new StringBuilder("<Delete>");
        foreach (var key in keys)
        {
            body.Append("<Object><Key>").Append(key).Append("</Key></Object>");
        }

        using (var delete = new HttpRequestMessage(HttpMethod.Post, "/public?delete"))
        {
            Writer(delete);
            delete.Content = new StringContent(body.Append("</Delete>").ToString(), Encoding.UTF8, "application/xml");
            Assert.True(delete.Content.Headers.ContentLength > 64 * 1024);
            using var deleted = await client.SendAsync(delete);
            Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        }

        Assert.Empty(origin.Objects);
        using var after = await client.GetAsync("/public/" + keys[^1]);
        Assert.True(after.StatusCode == HttpStatusCode.NotFound, $"the last of 1,000 deleted objects was served: {(int)after.StatusCode} X-Cache {Outcome(after)}");
        // The entries under the keys' usual spelling are deleted from the bucket too, after the answer (for the other sidecars).
        await fixture.Eventually(() => instance.Server.Cache!.Metrics.Evictions >= 2 + 1000, "the bucket deletes of the 1,000 keys' entries", instance.Server.Cache);
        await Assert.ThrowsAsync<Amazon.S3.AmazonS3Exception>(() => store.GetObjectMetadataAsync(CacheFixture.Bucket, entryName));
    }

    [Fact]
    public async Task A_DeleteObjects_body_over_the_copy_bound_makes_every_entry_of_its_bucket_a_miss()
    {
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/h.bin", 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/h.bin");

        // Valid XML the origin reads, 3 MiB long: the sidecar keeps no copy past 2 MiB.
        var xml = "<Delete><!--" + new string(' ', 3 * 1024 * 1024) + "--><Object><Key>h.bin</Key></Object></Delete>";
        using (var delete = new HttpRequestMessage(HttpMethod.Post, "/public?delete"))
        {
            Writer(delete);
            delete.Content = new StringContent(xml, Encoding.UTF8, "application/xml");
            using var deleted = await client.SendAsync(delete);
            Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        }

        Assert.False(origin.Objects.ContainsKey("/public/h.bin"));
        using var after = await client.GetAsync("/public/h.bin");
        Assert.True(after.StatusCode == HttpStatusCode.NotFound, $"a deleted object was served: {(int)after.StatusCode} X-Cache {Outcome(after)}");
        Assert.Contains("sidekick_cache_bucket_invalidations_total{reason=\"delete_objects_unread\"} 1\n", Metrics(instance), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_DeleteObjects_body_the_sidecar_cannot_read_makes_every_entry_of_its_bucket_a_miss_and_no_other()
    {
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/g.bin", 64 * 1024);
        origin.Put("/other/g.bin", 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/g.bin");
        await FillAnonymouslyAsync(instance, client, "/other/g.bin", fillsBefore: 1);

        // Not XML the sidecar can read (an origin may still take it: which objects went is unknown).
        using (var delete = new HttpRequestMessage(HttpMethod.Post, "/public?delete"))
        {
            Writer(delete);
            delete.Content = new StringContent("<Delete><Object><Key>g.bin</Key></Object>", Encoding.UTF8, "application/xml");
            using var deleted = await client.SendAsync(delete);
            Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        }

        using (var sameBucket = await client.GetAsync("/public/g.bin"))
        {
            Assert.True(Outcome(sameBucket) != "HIT", $"an entry of the bucket was served after an unread DeleteObjects: {(int)sameBucket.StatusCode} X-Cache {Outcome(sameBucket)}");
        }

        using (var otherBucket = await client.GetAsync("/other/g.bin"))
        {
            Assert.Equal("HIT", Outcome(otherBucket));
        }

        Assert.Contains("sidekick_cache_bucket_invalidations_total{reason=\"delete_objects_unread\"} 1\n", Metrics(instance), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_overwrite_under_one_query_evicts_the_entry_a_reader_filled_under_another()
    {
        // The AWS SDKs for JavaScript v3, Go v2 and Rust send GetObject as GET /bucket/key?x-id=GetObject, and
        // PutObject as PUT /bucket/key?x-id=PutObject; presigned downloads carry response-content-disposition.
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/b.bin", 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/b.bin?x-id=GetObject");

        var v2 = RandomNumberGenerator.GetBytes(64 * 1024);
        using (var put = new HttpRequestMessage(HttpMethod.Put, "/public/b.bin?x-id=PutObject") { Content = new ByteArrayContent(v2) })
        {
            Writer(put);
            using var written = await client.SendAsync(put);
            Assert.Equal(HttpStatusCode.OK, written.StatusCode);
        }

        using var read = new HttpRequestMessage(HttpMethod.Get, "/public/b.bin?x-id=GetObject");
        Writer(read);
        using var after = await client.SendAsync(read);
        var body = await after.Content.ReadAsByteArrayAsync();
        Assert.True(v2.AsSpan().SequenceEqual(body), $"the overwritten version was served to its writer: X-Cache {Outcome(after)}");
    }

    [Fact]
    public async Task A_delete_spelled_with_percent_encoding_evicts_the_entry_read_without_it()
    {
        // botocore and the Go SDK percent-encode '(' ')' '!' '*' '\'' in the key; curl, browsers and other clients send them raw.
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/report(1).bin", 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/report(1).bin");

        using (var delete = new HttpRequestMessage(HttpMethod.Delete, "/public/report%281%29.bin"))
        {
            Writer(delete);
            using var deleted = await client.SendAsync(delete);
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        Assert.False(origin.Objects.ContainsKey("/public/report(1).bin"));
        using var after = await client.GetAsync("/public/report(1).bin");
        Assert.True(after.StatusCode == HttpStatusCode.NotFound, $"a deleted object was served: {(int)after.StatusCode} X-Cache {Outcome(after)}");
    }

    [Fact]
    public async Task A_delete_through_another_host_name_of_the_sidecar_evicts_the_entry()
    {
        // One app reaches the sidecar as localhost:9000, another (or the writer) as 127.0.0.1:9000: same backends, same object.
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/e.bin", 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/e.bin");

        using (var delete = new HttpRequestMessage(HttpMethod.Delete, "/public/e.bin"))
        {
            Writer(delete);
            delete.Headers.Host = "127.0.0.1:9000";
            using var deleted = await client.SendAsync(delete);
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        using var after = await client.GetAsync("/public/e.bin");
        Assert.True(after.StatusCode == HttpStatusCode.NotFound, $"a deleted object was served: {(int)after.StatusCode} X-Cache {Outcome(after)}");
    }

    [Fact]
    public async Task A_bucket_policy_that_withdraws_anonymous_read_reaches_the_objects_cached_under_it()
    {
        // mc anonymous set none / PutBucketPolicy through the sidecar: anonymous clients kept reading for up to a day.
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/c.bin", 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/c.bin");

        using (var policy = new HttpRequestMessage(HttpMethod.Put, "/public?policy") { Content = new StringContent("{\"Statement\":[]}") })
        {
            Writer(policy);
            using var set = await client.SendAsync(policy);
            Assert.Equal(HttpStatusCode.NoContent, set.StatusCode);
        }

        using var after = await client.GetAsync("/public/c.bin");
        Assert.True(after.StatusCode == HttpStatusCode.Forbidden, $"served to an anonymous client after the bucket was made private: {(int)after.StatusCode} X-Cache {Outcome(after)}");
        Assert.Contains("sidekick_cache_bucket_invalidations_total{reason=\"bucket_write\"} 1\n", Metrics(instance), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_bucket_policy_set_in_virtual_host_style_reaches_the_objects_cached_under_it()
    {
        // Virtual-host style: the bucket is in the Host, and the bucket itself is the path "/".
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/v.bin", 64 * 1024);
        var (instance, client) = await StartAsync(origin);
        await using var running = instance;
        client.DefaultRequestHeaders.Host = "public.s3.local:9000";
        await FillAnonymouslyAsync(instance, client, "/v.bin");

        using (var policy = new HttpRequestMessage(HttpMethod.Put, "/?policy") { Content = new StringContent("{\"Statement\":[]}") })
        {
            Writer(policy);
            using var set = await client.SendAsync(policy);
            Assert.Equal(HttpStatusCode.NoContent, set.StatusCode);
        }

        using var after = await client.GetAsync("/v.bin");
        Assert.True(after.StatusCode == HttpStatusCode.Forbidden, $"served to an anonymous client after the bucket was made private: {(int)after.StatusCode} X-Cache {Outcome(after)}");
    }

    [Fact]
    public async Task An_object_written_through_the_sidecar_makes_its_buckets_cached_listing_a_miss()
    {
        // With SIDEKICK_CACHE_DEFAULT_MAX_AGE, a ListObjectsV2 answer (no validator, no Cache-Control) is stored.
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/lst/old.bin", 1024);
        var environment = fixture.Environment();
        environment["SIDEKICK_CACHE_DEFAULT_MAX_AGE"] = "300";
        environment["SIDEKICK_CACHE_MIN_SIZE"] = "100";
        var (instance, client) = await StartAsync(origin, environment);
        await using var running = instance;
        const string Listing = "/public?list-type=2&prefix=lst/";
        await FillAnonymouslyAsync(instance, client, Listing);

        using (var put = new HttpRequestMessage(HttpMethod.Put, "/public/lst/new.bin") { Content = new ByteArrayContent(new byte[10]) })
        {
            Writer(put);
            using var written = await client.SendAsync(put);
            Assert.Equal(HttpStatusCode.OK, written.StatusCode);
        }

        using var after = await client.GetAsync(Listing);
        var listing = await after.Content.ReadAsStringAsync();
        Assert.True(listing.Contains("<Key>lst/new.bin</Key>", StringComparison.Ordinal),
            $"the listing cached before the write was served: X-Cache {Outcome(after)}, {listing}");
    }

    [Fact]
    public async Task A_write_is_answered_within_seconds_when_the_store_stops_answering_its_eviction()
    {
        await using var origin = await S3LikeOrigin.StartAsync();
        origin.Put("/public/f.bin", 64 * 1024);
        await using var relay = await StoreRelay.StartAsync(fixture.S3.Url, conditionalWrites: false);
        var (instance, client) = await StartAsync(origin, fixture.Environment(relay.Url));
        await using var running = instance;
        await FillAnonymouslyAsync(instance, client, "/public/f.bin");

        // The store hangs (not down): the eviction's listing of the entry's variants gets no answer.
        var hung = new TaskCompletionSource();
        relay.EntryLookupsWaitFor = hung.Task;
        try
        {
            var v2 = RandomNumberGenerator.GetBytes(64 * 1024);
            var clock = Stopwatch.StartNew();
            using (var put = new HttpRequestMessage(HttpMethod.Put, "/public/f.bin") { Content = new ByteArrayContent(v2) })
            {
                Writer(put);
                using var written = await client.SendAsync(put);
                Assert.Equal(HttpStatusCode.OK, written.StatusCode);
            }

            var took = clock.Elapsed;
            Assert.True(took < TimeSpan.FromSeconds(8), $"the write's answer waited {took.TotalSeconds:F1} s for a hung store");

            // Meanwhile the old version is not served from the store.
            using var after = await client.GetAsync("/public/f.bin");
            Assert.NotEqual("HIT", Outcome(after));
            Assert.Equal(v2, await after.Content.ReadAsByteArrayAsync());
        }
        finally
        {
            hung.SetResult();
        }
    }

    private static string Metrics(Sidekick.Hosting.SidekickInstance instance)
    {
        var cache = instance.Server.Cache!;
        var text = new StringBuilder();
        cache.Metrics.WriteTo(text, cache.Health.Online, cache.FillsInFlight, cache.Fills);
        return text.ToString();
    }

    private async Task<(Sidekick.Hosting.SidekickInstance, HttpClient)> StartAsync(S3LikeOrigin origin, Dictionary<string, string?>? environment = null)
    {
        var (instance, client) = await fixture.StartSidekickAsync([origin.Url], Integration.SidekickHarness.FastOptions, environment);
        client.DefaultRequestHeaders.Host = "localhost:9000";
        return (instance, client);
    }

    private async Task FillAnonymouslyAsync(Sidekick.Hosting.SidekickInstance instance, HttpClient client, string target, long fillsBefore = 0)
    {
        using (var miss = await client.GetAsync(target))
        {
            Assert.Equal(HttpStatusCode.OK, miss.StatusCode);
            Assert.Equal("MISS", Outcome(miss));
            await miss.Content.ReadAsByteArrayAsync();
        }

        await fixture.Eventually(() => instance.Server.Cache!.Metrics.FillsCompleted > fillsBefore && instance.Server.Cache.FillsInFlight == 0, "the fill of " + target, instance.Server.Cache);
        using var hit = await client.GetAsync(target);
        Assert.Equal("HIT", Outcome(hit));
    }

    /// <summary>A small S3-like origin on loopback, path-style: objects, DeleteObjects, a bucket policy, ListObjectsV2.</summary>
    private sealed class S3LikeOrigin : IAsyncDisposable
    {
        private readonly WebApplication _app;

        private S3LikeOrigin(WebApplication app, int port)
        {
            _app = app;
            Url = new Uri($"http://127.0.0.1:{port}");
        }

        public Uri Url { get; }

        /// <summary>Objects by decoded path ("/bucket/key").</summary>
        public ConcurrentDictionary<string, byte[]> Objects { get; } = new();

        /// <summary>Buckets made private by a bucket policy: anonymous requests get 403.</summary>
        public ConcurrentDictionary<string, bool> PrivateBuckets { get; } = new();

        public static async Task<S3LikeOrigin> StartAsync()
        {
            S3LikeOrigin? origin = null;
            var (app, port) = await LoopbackApp.StartAsync(context => origin!.HandleAsync(context));
            origin = new S3LikeOrigin(app, port);
            return origin;
        }

        public byte[] Put(string path, int size) => Objects[path] = RandomNumberGenerator.GetBytes(size);

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }

        private static string ETag(byte[] body) => "\"" + Convert.ToHexStringLower(SHA256.HashData(body))[..32] + "\"";

        private async Task HandleAsync(HttpContext context)
        {
            var request = context.Request;
            // Virtual-host style (<bucket>.s3.local) names the same objects as path style.
            var host = request.Host.Host;
            var bucketInHost = host.EndsWith(".s3.local", StringComparison.Ordinal) ? "/" + host[..host.IndexOf('.', StringComparison.Ordinal)] : "";
            var path = (bucketInHost + request.Path.Value!).TrimEnd('/'); // Kestrel decodes %28 etc. as S3 does
            if (path == "/health")
            {
                return;
            }

            var bucket = "/" + path.Split('/', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
            var anonymous = request.Headers.Authorization.Count == 0;
            if (HttpMethods.IsPut(request.Method) && request.Query.ContainsKey("policy"))
            {
                PrivateBuckets[bucket] = true; // a policy that withdraws anonymous read
                context.Response.StatusCode = 204;
                return;
            }

            if (HttpMethods.IsPost(request.Method) && request.Query.ContainsKey("delete"))
            {
                using var reader = new StreamReader(request.Body);
                var xml = await reader.ReadToEndAsync();
                var deleted = new StringBuilder("<DeleteResult>");
                try
                {
                    foreach (var key in XDocument.Parse(xml).Descendants().Where(e => e.Name.LocalName == "Key"))
                    {
                        Objects.TryRemove(bucket + "/" + key.Value, out _);
                        deleted.Append("<Deleted><Key>").Append(System.Security.SecurityElement.Escape(key.Value)).Append("</Key></Deleted>");
                    }
                }
                catch (System.Xml.XmlException)
                {
                    // An origin that took a body the sidecar cannot read: nothing known of what it deleted.
                }

                await context.Response.WriteAsync(deleted.Append("</DeleteResult>").ToString());
                return;
            }

            if (HttpMethods.IsPut(request.Method))
            {
                using var buffer = new MemoryStream();
                await request.Body.CopyToAsync(buffer);
                Objects[path] = buffer.ToArray();
                context.Response.Headers.ETag = ETag(buffer.ToArray());
                return;
            }

            if (HttpMethods.IsDelete(request.Method))
            {
                Objects.TryRemove(path, out _);
                context.Response.StatusCode = 204;
                return;
            }

            if (anonymous && PrivateBuckets.ContainsKey(bucket))
            {
                context.Response.StatusCode = 403;
                await context.Response.WriteAsync("<Error><Code>AccessDenied</Code></Error>");
                return;
            }

            if (path == bucket && request.Query.ContainsKey("list-type"))
            {
                // ListObjectsV2, as S3 and MinIO answer it: no Last-Modified, ETag or Cache-Control.
                var prefix = bucket + "/" + request.Query["prefix"];
                var listing = new StringBuilder("<ListBucketResult><Name>").Append(bucket[1..]).Append("</Name>");
                foreach (var key in Objects.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal))
                {
                    listing.Append("<Contents><Key>").Append(key[(bucket.Length + 1)..]).Append("</Key><Size>").Append(Objects[key].Length).Append("</Size></Contents>");
                }

                var bytes = Encoding.UTF8.GetBytes(listing.Append("</ListBucketResult>").ToString());
                context.Response.ContentType = "application/xml";
                context.Response.ContentLength = bytes.Length;
                await context.Response.Body.WriteAsync(bytes);
                return;
            }

            if (!Objects.TryGetValue(path, out var body))
            {
                context.Response.StatusCode = 404;
                await context.Response.WriteAsync("<Error><Code>NoSuchKey</Code></Error>");
                return;
            }

            context.Response.Headers.ETag = ETag(body);
            // As MinIO: no Cache-Control; an object written 10 days ago (heuristic freshness: one day).
            context.Response.Headers.LastModified = DateTimeOffset.UtcNow.AddDays(-10).ToString("r");
            context.Response.ContentLength = body.Length;
            if (!HttpMethods.IsHead(request.Method))
            {
                await context.Response.Body.WriteAsync(body);
            }
        }
    }
}
