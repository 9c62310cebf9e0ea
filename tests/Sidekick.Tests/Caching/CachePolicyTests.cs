using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

public sealed class CachePolicyTests
{
    private static readonly CacheOptions Options = new() { Endpoint = new Uri("http://s3:9000"), AccessKey = "a", SecretKey = "s", Bucket = "b", MinSize = 10 };
    private static readonly DateTimeOffset Now = new(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);

    private static CachedResponse Entry(string? cacheControl, TimeSpan age, bool auth = false, string? lastModified = null, string? expires = null)
    {
        var headers = new List<KeyValuePair<string, string>> { new("ETag", "\"x\"") };
        if (cacheControl is not null)
        {
            headers.Add(new("Cache-Control", cacheControl));
        }

        if (lastModified is not null)
        {
            headers.Add(new("Last-Modified", lastModified));
        }

        if (expires is not null)
        {
            headers.Add(new("Expires", expires));
        }

        return new CachedResponse { Status = 200, Headers = headers, Length = 100, ReceivedAt = Now - age, InitialAge = TimeSpan.Zero, Date = Now - age, FilledWithCredentials = auth };
    }

    private static CacheDecision Decide(CachedResponse entry, string request = "", bool credentials = false, CacheOptions? options = null) =>
        CachePolicy.Decide(entry, CacheControl.Parse(request), CacheControl.Parse(entry.Header("Cache-Control")), Now, options ?? Options, credentials);

    [Theory]
    [InlineData("max-age=60", 30, "Serve")]
    [InlineData("max-age=60", 90, "Revalidate")]
    [InlineData("max-age=0", 0, "Revalidate")]
    [InlineData("s-maxage=120, max-age=10", 60, "Serve")]
    [InlineData("no-cache, max-age=600", 1, "Revalidate")]
    [InlineData("max-age=60, stale-while-revalidate=30", 80, "ServeAndRevalidate")]
    [InlineData("max-age=60, stale-while-revalidate=30", 100, "Revalidate")]
    [InlineData("max-age=60, must-revalidate, stale-while-revalidate=30", 80, "Revalidate")]
    [InlineData("MAX-AGE=\"60\"", 30, "Serve")]
    public void Freshness(string cacheControl, int ageSeconds, string expected) =>
        Assert.Equal(Enum.Parse<CacheDecision>(expected), Decide(Entry(cacheControl, TimeSpan.FromSeconds(ageSeconds))));

    [Fact]
    public void Request_directives()
    {
        var entry = Entry("max-age=600", TimeSpan.FromSeconds(100));
        Assert.Equal(CacheDecision.Revalidate, Decide(entry, "no-cache"));
        Assert.Equal(CacheDecision.Revalidate, Decide(entry, "max-age=50"));
        Assert.Equal(CacheDecision.Revalidate, Decide(entry, "min-fresh=550"));
        Assert.Equal(CacheDecision.Serve, Decide(Entry("max-age=60", TimeSpan.FromSeconds(100)), "max-stale=60"));
    }

    [Theory]
    [InlineData("max-stale", "Serve")]
    [InlineData("max-stale=3600", "Serve")]
    [InlineData("max-stale=10", "Revalidate")]
    [InlineData("max-stale=abc", "Revalidate")] // §1.2.2: not delta-seconds, so not an ask for any staleness
    [InlineData("max-stale=", "Revalidate")]
    [InlineData("max-stale=-5", "Revalidate")]
    [InlineData("max-stale, max-stale=10", "Revalidate")] // given twice: neither is trusted (§4.2.1's rule for max-age)
    public void Section_5_2_1_2_max_stale_widens_only_by_a_value_it_can_read(string request, string expected)
    {
        // Stale by 40 s: max-age=60, age 100 s.
        Assert.Equal(Enum.Parse<CacheDecision>(expected), Decide(Entry("max-age=60", TimeSpan.FromSeconds(100)), request));
    }

    [Theory]
    [InlineData("max-age=600, immutable", "")]
    [InlineData("public, max-age=600", "")]
    [InlineData("s-maxage=600", "")]
    [InlineData(null, "")]
    [InlineData("max-age=60", "max-stale=3600")]
    [InlineData("max-age=60, stale-while-revalidate=3600", "")]
    public void Entries_filled_with_credentials_are_confirmed_for_every_requester(string? cacheControl, string request)
    {
        // RFC 9111 §3.5: the requester's own conditional request decides, anonymous or not, fresh or stale.
        var entry = Entry(cacheControl, TimeSpan.FromSeconds(120), auth: true, lastModified: (Now - TimeSpan.FromDays(30)).ToString("r"));
        Assert.Equal(CacheDecision.Revalidate, Decide(entry, request, credentials: false));
        Assert.Equal(CacheDecision.Revalidate, Decide(entry, request, credentials: true));
        var stale = CacheControl.Parse("stale-if-error=86400");
        Assert.False(CachePolicy.MayServeStaleOnError(entry, stale, CacheControl.Parse(cacheControl ?? ""), Now + TimeSpan.FromHours(1), Options));
    }

    [Fact]
    public void Sharing_public_credentialed_entries_is_an_opt_in()
    {
        var shared = Options with { SharePublic = true };
        Assert.Equal(CacheDecision.Serve, Decide(Entry("public, max-age=600", TimeSpan.FromSeconds(1), auth: true), options: shared));
        Assert.Equal(CacheDecision.Serve, Decide(Entry("s-maxage=600", TimeSpan.FromSeconds(1), auth: true), options: shared));
        Assert.Equal(CacheDecision.Revalidate, Decide(Entry("max-age=600", TimeSpan.FromSeconds(1), auth: true), options: shared));
    }

    [Fact]
    public void Entries_of_earlier_versions_count_as_filled_with_credentials()
    {
        // Before, "p" was false for a credentialed fill marked public; such an entry must not become anonymous.
        var legacy = Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("{\"s\":200,\"l\":5,\"r\":0,\"a\":0,\"p\":false,\"h\":[],\"v\":[]}"));
        Assert.True(CachedResponse.Deserialize(legacy)!.FilledWithCredentials);
    }

    [Fact]
    public void Heuristic_and_expires_lifetimes()
    {
        var heuristic = Entry(null, TimeSpan.Zero, lastModified: (Now - TimeSpan.FromHours(10)).ToString("r"));
        Assert.Equal(TimeSpan.FromHours(1), CachePolicy.FreshnessLifetime(heuristic, CacheControl.Parse(default(Microsoft.Extensions.Primitives.StringValues)), Options));
        var expires = Entry(null, TimeSpan.Zero, expires: (Now + TimeSpan.FromMinutes(5)).ToString("r"));
        Assert.Equal(TimeSpan.FromMinutes(5), CachePolicy.FreshnessLifetime(expires, CacheControl.Parse(default(Microsoft.Extensions.Primitives.StringValues)), Options));
        var invalid = Entry(null, TimeSpan.Zero, expires: "0");
        Assert.Equal(TimeSpan.Zero, CachePolicy.FreshnessLifetime(invalid, CacheControl.Parse(default(Microsoft.Extensions.Primitives.StringValues)), Options));
    }

    [Fact]
    public void Age_counts_the_initial_age_and_the_time_stored()
    {
        var initial = CachePolicy.InitialAge("10", Now - TimeSpan.FromSeconds(3), Now - TimeSpan.FromSeconds(1), Now);
        Assert.Equal(TimeSpan.FromSeconds(11), initial);
        var entry = Entry("max-age=60", TimeSpan.FromSeconds(20)) with { InitialAge = initial };
        Assert.Equal(TimeSpan.FromSeconds(31), CachePolicy.CurrentAge(entry, Now));
    }

    [Theory]
    [InlineData(200, "", "max-age=60", 100L, true)]
    [InlineData(206, "", "max-age=60", 100L, false)]
    [InlineData(404, "", "max-age=60", 100L, true)] // RFC 9111 §3: explicit freshness makes any final status storable
    [InlineData(304, "", "max-age=60", 100L, false)]
    [InlineData(500, "", "", 100L, false)] // a validator alone is not enough for a status without heuristic freshness
    [InlineData(404, "", "", 100L, true)]
    [InlineData(200, "no-store", "max-age=60", 100L, false)]
    [InlineData(200, "", "no-store", 100L, false)]
    [InlineData(200, "", "private", 100L, false)]
    [InlineData(200, "", "max-age=60", 5L, false)]
    public void Storable(int status, string request, string response, long length, bool expected) =>
        Assert.Equal(expected, CachePolicy.IsStorable(status, CacheControl.Parse(request), CacheControl.Parse(response),
            [new("ETag", "\"x\"")], length, Options));

    [Theory]
    [InlineData(206, "", "max-age=60", "ETag", 100L, "status")]
    [InlineData(200, "no-store", "max-age=60", "ETag", 100L, "no_store")]
    [InlineData(200, "", "no-store, private", "ETag", 100L, "no_store")]
    [InlineData(200, "", "private", "ETag", 100L, "private")]
    [InlineData(200, "", "max-age=60", "Vary", 100L, "vary_star")]
    [InlineData(200, "", "max-age=60", "ETag", -1L, "unknown_length")]
    [InlineData(200, "", "max-age=60", "ETag", 5L, "too_small")]
    [InlineData(200, "", "max-age=60", "ETag", 1L << 40, "too_large")]
    [InlineData(500, "", "", "ETag", 100L, "no_freshness")]
    [InlineData(200, "", "", "X-Other", 100L, "no_freshness")]
    [InlineData(200, "", "", "ETag", 100L, null)]
    public void Why_a_response_is_not_stored(int status, string request, string response, string field, long length, string? reason)
    {
        KeyValuePair<string, string>[] headers = [new(field, field == "Vary" ? "accept, *" : "\"x\"")];
        var why = CachePolicy.WhyNotStorable(status, CacheControl.Parse(request), CacheControl.Parse(response), headers, length < 0 ? null : length, Options);
        Assert.Equal(reason, why is { } r ? CacheMetrics.NotStoredLabel(r) : null);
    }

    [Fact]
    public void Metadata_round_trips()
    {
        var entry = Entry("max-age=60", TimeSpan.FromSeconds(5), auth: true) with { VaryNames = ["accept-encoding"], VaryValues = ["gzip"] };
        var back = CachedResponse.Deserialize(entry.Serialize())!;
        Assert.Equal(entry.Headers, back.Headers);
        Assert.True(back.FilledWithCredentials);
        Assert.False(CachedResponse.Deserialize((entry with { FilledWithCredentials = false }).Serialize())!.FilledWithCredentials);
        Assert.Equal(["gzip"], back.VaryValues);
        Assert.Null(CachedResponse.Deserialize("not base64 json"));
    }
}
