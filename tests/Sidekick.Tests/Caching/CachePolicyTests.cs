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

        return new CachedResponse { Status = 200, Headers = headers, Length = 100, ReceivedAt = Now - age, InitialAge = TimeSpan.Zero, Date = Now - age, AuthRequired = auth };
    }

    private static CacheDecision Decide(CachedResponse entry, string request = "", bool authorized = false) =>
        CachePolicy.Decide(entry, CacheControl.Parse(request), CacheControl.Parse(entry.Header("Cache-Control")), Now, Options, authorized);

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

    [Fact]
    public void Authorized_entries_are_always_confirmed_unless_public()
    {
        Assert.Equal(CacheDecision.Revalidate, Decide(Entry("max-age=600, immutable", TimeSpan.FromSeconds(1), auth: true), authorized: true));
        Assert.Equal(CacheDecision.Serve, Decide(Entry("public, max-age=600", TimeSpan.FromSeconds(1), auth: true), authorized: true));
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
    [InlineData(404, "", "max-age=60", 100L, false)]
    [InlineData(200, "no-store", "max-age=60", 100L, false)]
    [InlineData(200, "", "no-store", 100L, false)]
    [InlineData(200, "", "private", 100L, false)]
    [InlineData(200, "", "max-age=60", 5L, false)]
    public void Storable(int status, string request, string response, long length, bool expected) =>
        Assert.Equal(expected, CachePolicy.IsStorable(status, CacheControl.Parse(request), CacheControl.Parse(response),
            [new("ETag", "\"x\"")], length, Options));

    [Fact]
    public void Metadata_round_trips()
    {
        var entry = Entry("max-age=60", TimeSpan.FromSeconds(5), auth: true) with { VaryNames = ["accept-encoding"], VaryValues = ["gzip"] };
        var back = CachedResponse.Deserialize(entry.Serialize())!;
        Assert.Equal(entry.Headers, back.Headers);
        Assert.True(back.AuthRequired);
        Assert.Equal(["gzip"], back.VaryValues);
        Assert.Null(CachedResponse.Deserialize("not base64 json"));
    }
}
