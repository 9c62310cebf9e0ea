using Sidekick.Caching;
using Sidekick.Cli;
using Sidekick.Topology;

namespace Sidekick.Tests.Caching;

public sealed class CacheConfigurationTests
{
    private static Dictionary<string, string?> Valid() => new()
    {
        ["SIDEKICK_CACHE_ENDPOINT"] = "http://minio-remote:9000",
        ["SIDEKICK_CACHE_ACCESS_KEY"] = "minio",
        ["SIDEKICK_CACHE_SECRET_KEY"] = "minio123-very-secret",
        ["SIDEKICK_CACHE_BUCKET"] = "cache01",
    };

    [Fact]
    public void Unset_endpoint_means_no_cache() => Assert.Null(CacheOptions.FromEnvironment(new Dictionary<string, string?>()));

    [Theory]
    [InlineData("64MB", 64_000_000L)]
    [InlineData("32MiB", 33_554_432L)]
    public void Upstream_sizes_and_durations(string size, long bytes)
    {
        var env = Valid();
        env["SIDEKICK_CACHE_MIN_SIZE"] = size;
        env["SIDEKICK_CACHE_HEALTH_DURATION"] = "20";
        var options = CacheOptions.FromEnvironment(env)!;
        Assert.Equal(bytes, options.MinSize);
        Assert.Equal(TimeSpan.FromSeconds(20), options.HealthInterval);
        env["SIDEKICK_CACHE_HEALTH_DURATION"] = "20s";
        Assert.Equal(TimeSpan.FromSeconds(20), CacheOptions.FromEnvironment(env)!.HealthInterval);
    }

    [Theory]
    [InlineData("SIDEKICK_CACHE_MIN_SIZE", "lots", "invalid SIDEKICK_CACHE_MIN_SIZE \"lots\"")]
    [InlineData("SIDEKICK_CACHE_HEALTH_DURATION", "soon", "invalid SIDEKICK_CACHE_HEALTH_DURATION \"soon\"")]
    [InlineData("SIDEKICK_CACHE_ENDPOINT", "ftp://x", "invalid SIDEKICK_CACHE_ENDPOINT \"ftp://x\"")]
    [InlineData("SIDEKICK_CACHE_BUCKET", "", "SIDEKICK_CACHE_BUCKET must be set")]
    [InlineData("SIDEKICK_CACHE_PART_SIZE", "1MiB", "must be between 5MiB and 512MiB")]
    [InlineData("SIDEKICK_CACHE_NAMESPACE", "prod/minio", "invalid SIDEKICK_CACHE_NAMESPACE \"prod/minio\": expected 1 to 64 letters")]
    [InlineData("SIDEKICK_CACHE_NAMESPACE", "..", "invalid SIDEKICK_CACHE_NAMESPACE \"..\"")]
    [InlineData("SIDEKICK_CACHE_SPOOL_SIZE", "0", "invalid SIDEKICK_CACHE_SPOOL_SIZE \"0\": smaller than SIDEKICK_CACHE_MIN_SIZE (1048576 bytes), so no response could be stored")]
    [InlineData("SIDEKICK_CACHE_SPOOL_SIZE", "512KiB", "invalid SIDEKICK_CACHE_SPOOL_SIZE \"512KiB\": smaller than SIDEKICK_CACHE_MIN_SIZE")]
    public void Bad_values_name_the_variable_and_never_the_secret(string name, string value, string expected)
    {
        var env = Valid();
        env[name] = value;
        var error = Assert.Throws<UsageException>(() => CacheOptions.FromEnvironment(env));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("minio123-very-secret", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("minio123-very-secret", CacheOptions.FromEnvironment(Valid())!.ToString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("u:hunter2@h:9000", "invalid SIDEKICK_CACHE_ENDPOINT \"REDACTED@h:9000\": expected an http or https URL such as http://minio-cache:9000")]
    [InlineData("http://h:9000/?secret=hunter2", "invalid SIDEKICK_CACHE_ENDPOINT \"http://h:9000/?REDACTED\": expected no user information, query or fragment, such as http://minio-cache:9000 (credentials go in SIDEKICK_CACHE_ACCESS_KEY and SIDEKICK_CACHE_SECRET_KEY)")]
    [InlineData("http://u:hunter2@h:9000", "invalid SIDEKICK_CACHE_ENDPOINT \"http://REDACTED@h:9000\": expected no user information, query or fragment, such as http://minio-cache:9000 (credentials go in SIDEKICK_CACHE_ACCESS_KEY and SIDEKICK_CACHE_SECRET_KEY)")]
    public void A_cache_endpoint_with_a_secret_is_refused_without_echoing_it(string endpoint, string expected)
    {
        var env = Valid();
        env["SIDEKICK_CACHE_ENDPOINT"] = endpoint;
        Assert.Equal(expected, Assert.Throws<UsageException>(() => CacheOptions.FromEnvironment(env)).Message);
    }

    private const string BucketRule = "expected the name of an existing bucket, 3 to 255 letters, digits, '.', '-' or '_' " +
                                      "(S3 today: 3 to 63 lowercase letters, digits, '.' and '-'), such as sidekick-cache";

    [Theory]
    [InlineData("bad/bucket", "bad/bucket")]
    [InlineData("x!", "x!")]
    [InlineData("ab", "ab")]
    [InlineData("a b", "a b")]
    [InlineData("a\u0001b", "a\\u0001b")]
    public void A_name_that_can_never_be_a_bucket_is_refused_at_start(string bucket, string shown)
    {
        var env = Valid();
        env["SIDEKICK_CACHE_BUCKET"] = bucket;
        Assert.Equal($"invalid SIDEKICK_CACHE_BUCKET \"{shown}\": {BucketRule}", Assert.Throws<UsageException>(() => CacheOptions.FromEnvironment(env)).Message);
        env["SIDEKICK_CACHE_BUCKET"] = new string('b', 256);
        Assert.Throws<UsageException>(() => CacheOptions.FromEnvironment(env));
    }

    // Legacy S3 buckets and other S3-compatible stores allow uppercase, '_' and up to 255 characters.
    [Theory]
    [InlineData("sidekick-cache")]
    [InlineData("cache.v2")]
    [InlineData("Legacy_Bucket")]
    [InlineData("abc")]
    public void Names_some_store_allows_are_accepted(string bucket)
    {
        var env = Valid();
        env["SIDEKICK_CACHE_BUCKET"] = bucket;
        Assert.Equal(bucket, CacheOptions.FromEnvironment(env)!.Bucket);
        env["SIDEKICK_CACHE_BUCKET"] = new string('b', 255);
        Assert.NotNull(CacheOptions.FromEnvironment(env));
    }

    [Fact]
    public void The_default_spool_budget_holds_the_largest_object_the_cache_takes()
    {
        var environment = Valid();
        Assert.Equal(5L << 30, CacheOptions.FromEnvironment(environment)!.SpoolSize); // MAX_SIZE's default, 5 GiB
        environment["SIDEKICK_CACHE_MAX_SIZE"] = "1GiB";
        Assert.Equal(4L << 30, CacheOptions.FromEnvironment(environment)!.SpoolSize); // never under 4 GiB
        environment["SIDEKICK_CACHE_MAX_SIZE"] = "20GiB";
        Assert.Equal(20L << 30, CacheOptions.FromEnvironment(environment)!.SpoolSize);
        environment["SIDEKICK_CACHE_SPOOL_SIZE"] = "2GiB";
        Assert.Equal(2L << 30, CacheOptions.FromEnvironment(environment)!.SpoolSize); // as set
    }

    [Fact]
    public void The_default_namespace_is_named_by_the_backends_alone()
    {
        static string Of(params string[] sites) => CacheNamespace.Of(SiteParser.Parse(sites, "sidekick", "/health", "/health", 0));

        var production = Of("http://minio{1...4}:9000");
        Assert.Matches("^[0-9a-f]{16}$", production);
        // The same backends in another order, spelling or site, with a path: what they serve is the same.
        Assert.Equal(production, Of("http://MINIO4:9000,http://minio3:9000/,http://minio2:9000/data,http://minio1:9000"));
        Assert.Equal(production, Of("http://minio{1...2}:9000", "http://minio{3...4}:9000"));
        Assert.Equal(Of("http://a:9000", "http://b:9000"), Of("http://b:9000", "http://a:9000"));
        Assert.Equal(Of("http://a"), Of("http://a:80"));
        // Credentials (the probes' user information) are not part of the origin: a new password keeps the entries.
        Assert.Equal(production, Of("http://minio:one@minio{1...4}:9000"));
        Assert.Equal(Of("http://u:one@a:9000"), Of("http://u:two@a:9000"));
        Assert.Equal(Of("http://a:9000?x=1"), Of("http://a:9000"));
        // Another cluster, port or scheme is another origin.
        Assert.NotEqual(production, Of("http://minio{1...3}:9000"));
        Assert.NotEqual(production, Of("http://minio{1...4}:9001"));
        Assert.NotEqual(production, Of("https://minio{1...4}:9000"));

        var environment = Valid();
        Assert.Null(CacheOptions.FromEnvironment(environment)!.Namespace); // the server sets the default
        environment["SIDEKICK_CACHE_NAMESPACE"] = "prod-minio_2.a";
        Assert.Equal("prod-minio_2.a", CacheOptions.FromEnvironment(environment)!.Namespace);
    }
}
