using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>
/// CDN-Cache-Control (RFC 9213) makes sidekick more careful, never less: its no-store, private, no-cache and
/// must-revalidate apply beside Cache-Control's, and its max-age cuts a longer lifetime short; it never lengthens a
/// lifetime nor allows what Cache-Control forbids (an origin may purge its CDN, not a sidecar's bucket). A field
/// that is not a valid Structured Field Dictionary is ignored whole (§2.1).
/// </summary>
public sealed class TargetedCacheControlTests
{
    private static readonly CacheOptions Options = new() { Endpoint = new Uri("http://s3:9000"), AccessKey = "a", SecretKey = "s", Bucket = "b", MinSize = 10 };
    private static readonly DateTimeOffset Now = new(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);

    private static CachedResponse Entry(string cacheControl, string? targeted, TimeSpan age)
    {
        var headers = new List<KeyValuePair<string, string>> { new("ETag", "\"x\""), new("Cache-Control", cacheControl) };
        if (targeted is not null)
        {
            headers.Add(new(TargetedCacheControl.FieldName, targeted));
        }

        return new CachedResponse { Status = 200, Headers = headers, Length = 100, ReceivedAt = Now - age, InitialAge = TimeSpan.Zero, Date = Now - age };
    }

    [Theory]
    [InlineData("max-age=3600", null, 60, "Serve")]
    [InlineData("max-age=3600", "max-age=0", 0, "Revalidate")] // cdn-max-age-0
    [InlineData("max-age=3600", "max-age=30", 60, "Revalidate")] // cdn-max-age-long-cc-max-age: the shorter wins
    [InlineData("max-age=3600", "max-age=120", 60, "Serve")]
    [InlineData("max-age=3600", "max-age=999999999999999", 60, "Serve")] // 15 digits: 2^31 s, not an overflow
    [InlineData("max-age=10", "max-age=3600", 60, "Revalidate")] // never lengthens (cdn-fresh over a short Cache-Control)
    [InlineData("max-age=3600", "no-cache", 1, "Revalidate")] // cdn-no-cache
    [InlineData("max-age=3600", "no-cache=?1", 1, "Revalidate")]
    [InlineData("max-age=3600", "no-cache=?0", 1, "Serve")] // false: not set
    [InlineData("max-age=60, stale-while-revalidate=600", "must-revalidate", 90, "Revalidate")]
    [InlineData("max-age=3600", "max-age=\"30\"", 60, "Serve")] // a string, not an integer: that directive is ignored
    [InlineData("max-age=3600", "max-age=30.5", 60, "Serve")] // a decimal: ignored alike
    [InlineData("max-age=3600", "max-age=30, foo=!!", 60, "Serve")] // not a dictionary: the whole field is ignored
    [InlineData("max-age=3600", "Max-Age=30", 60, "Serve")] // keys are lowercase (RFC 8941 §3.1.2): invalid, ignored
    [InlineData("max-age=3600", "max-age=30,", 60, "Serve")] // trailing comma: invalid
    [InlineData("max-age=3600", "max-age=30;a=1, no-store;b", 60, "Revalidate")] // parameters are allowed
    [InlineData("max-age=3600", "foo=(\"a\" b), max-age=30", 60, "Revalidate")] // an inner list is a valid value
    public void Freshness_is_the_stricter_of_both_fields(string cacheControl, string? targeted, int ageSeconds, string expected)
    {
        var entry = Entry(cacheControl, targeted, TimeSpan.FromSeconds(ageSeconds));
        Assert.Equal(Enum.Parse<CacheDecision>(expected), CachePolicy.Decide(entry, CacheControl.Parse(""), entry.CacheControl(), Now, Options, false));
    }

    [Theory]
    [InlineData("max-age=3600", "no-store", "no_store")] // cdn-no-store-cc-fresh
    [InlineData("max-age=3600", "private", "private")] // cdn-private
    [InlineData("max-age=3600", "max-age=60", null)]
    [InlineData("no-store", "max-age=3600", "no_store")] // cdn-fresh-cc-nostore: Cache-Control's no-store stands
    [InlineData("max-age=3600", "no-store, foo=\"unterminated", null)] // invalid: ignored whole
    public void Storing_follows_the_stricter_of_both_fields(string cacheControl, string targeted, string? expected)
    {
        var response = CacheControl.Parse(cacheControl).RestrictedBy(TargetedCacheControl.Parse(targeted));
        var why = CachePolicy.WhyNotStorable(200, CacheControl.Parse(""), response, [new("ETag", "\"x\"")], 100, Options);
        Assert.Equal(expected, why is { } reason ? CacheMetrics.NotStoredLabel(reason) : null);
    }

    [Fact]
    public void Several_field_lines_are_one_dictionary_whose_last_value_of_a_key_wins()
    {
        var targeted = TargetedCacheControl.Parse(new Microsoft.Extensions.Primitives.StringValues(["max-age=600", "max-age=30, private"]));
        Assert.NotNull(targeted);
        Assert.Equal(TimeSpan.FromSeconds(30), targeted!.MaxAge);
        Assert.Equal(["private"], targeted.RestrictingDirectives);
        Assert.Equal(TimeSpan.FromSeconds(600), TargetedCacheControl.Parse(new Microsoft.Extensions.Primitives.StringValues(["max-age=600", ""]))!.MaxAge);
    }
}
