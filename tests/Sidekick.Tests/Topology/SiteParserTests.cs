using Sidekick.Cli;
using Sidekick.Topology;

namespace Sidekick.Tests.Topology;

public sealed class SiteParserTests
{
    [Theory]
    [InlineData("http://minio{1...4}:9000", "http://minio1:9000 http://minio2:9000 http://minio3:9000 http://minio4:9000")]
    [InlineData("http://node{01...03}:9000", "http://node01:9000 http://node02:9000 http://node03:9000")]
    [InlineData("http://172.17.0.{2...5}:9000", "http://172.17.0.2:9000 http://172.17.0.3:9000 http://172.17.0.4:9000 http://172.17.0.5:9000")]
    [InlineData("http://a{1...2}:9000,http://b{1...2}:9000", "http://a1:9000 http://a2:9000 http://b1:9000 http://b2:9000")]
    [InlineData("http://h{1...2}.z{1...3}:9000", "http://h1.z1:9000 http://h2.z1:9000 http://h1.z2:9000 http://h2.z2:9000 http://h1.z3:9000 http://h2.z3:9000")]
    [InlineData("http://n{a...c}:9000", "http://na:9000 http://nb:9000 http://nc:9000")]
    [InlineData("http://n{8...a}:9000", "http://n8:9000 http://n9:9000 http://na:9000")]
    [InlineData("http://n{0...10}:9000", "http://n0:9000 http://n1:9000 http://n2:9000 http://n3:9000 http://n4:9000 http://n5:9000 http://n6:9000 http://n7:9000 http://n8:9000 http://n9:9000 http://n10:9000")]
    [InlineData("http://n{1...09}:9000", "http://n01:9000 http://n02:9000 http://n03:9000 http://n04:9000 http://n05:9000 http://n06:9000 http://n07:9000 http://n08:9000 http://n09:9000")]
    [InlineData("http://n{1...1}:9000", "http://n1:9000")]
    [InlineData("http://a:9000,http://b:9000", "http://a:9000 http://b:9000")]
    public void Expands_like_upstream(string site, string expected) =>
        Assert.Equal(expected.Split(' '), SiteParser.ExpandSite(site));

    [Fact]
    public void Padded_ranges_keep_width()
    {
        var values = SiteParser.ExpandSite("http://n{001...100}:9000");
        Assert.Equal(100, values.Count);
        Assert.Equal("http://n001:9000", values[0]);
        Assert.Equal("http://n100:9000", values[^1]);
        Assert.Equal(16, SiteParser.ExpandSite("http://n{01...16}:9000").Count);
        Assert.Equal("http://n1f:9000", SiteParser.ExpandSite("http://n{10...1f}:9000")[^1]);
    }

    [Theory]
    [InlineData("http://a{1...2}:9000,http://c:9000", "invalid host")] // mixed items are not expanded
    [InlineData("http://n{A...C}:9000", "invalid ellipsis format")]
    [InlineData("http://n{3...1}:9000", "incorrect range start 3 cannot be bigger than end 1")]
    [InlineData("http://n{a...z}:9000", "invalid range bound \"z\"")]
    [InlineData("http://h{1...4}/{x}", "invalid ellipsis format")]
    [InlineData("minio1:9000", "missing host address")]
    [InlineData("ftp://h:9000", "unexpected scheme \"ftp\" in \"ftp://h:9000\", should be http or https")]
    [InlineData("http://h:99999", "invalid port")]
    [InlineData("http://a:9000,", "missing host address \"\"")]
    [InlineData("http://a:9000,https://b:9000", "mixes http and https")]
    [InlineData("http://u:p@h:9000", "must not carry credentials")]
    [InlineData("--log", "flags must come before the SITE arguments")]
    public void Bad_sites_fail_with_one_clear_line(string site, string expected)
    {
        var error = Assert.Throws<FatalException>(() => SiteParser.Parse([site], "sidekick", "/", "/", 0));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error.Message);
    }

    // The port is read after the query and the fragment are cut off (as Go's url.Parse does), and an unclosed
    // '[' is named as such; none of them is "invalid port".
    [Theory]
    [InlineData("http://127.0.0.1:9001?x=1", "endpoint \"http://127.0.0.1:9001?REDACTED\" must not carry credentials, a query or a fragment")]
    [InlineData("http://127.0.0.1:9001#f", "endpoint \"http://127.0.0.1:9001#REDACTED\" must not carry credentials, a query or a fragment")]
    [InlineData("http://[::1:9003", "missing ']' in \"http://[::1:9003\": an IPv6 address is written in brackets, e.g. http://[::1]:9000")]
    [InlineData("http://[::1]x:9003", "invalid port in \"http://[::1]x:9003\": expected ':' and a number in [1, 65535] after ']'")]
    [InlineData("http://h:9x/p?a=1", "invalid port in \"http://h:9x/p?REDACTED\": must be a number in [1, 65535]")]
    public void Query_fragment_and_bracket_errors_say_what_is_wrong(string site, string expected) =>
        Assert.Equal(expected, Assert.Throws<FatalException>(() => SiteParser.Parse([site], "sidekick", "/", "/", 0)).Message);

    // Without "scheme://" whatever precedes '@' is still user information: never echoed.
    [Theory]
    [InlineData("u:hunter2@127.0.0.1:9001", "missing host address \"REDACTED@127.0.0.1:9001\" in SITE 1")]
    [InlineData("hunter2@127.0.0.1:9001/x?tok=hunter2", "missing host address \"REDACTED@127.0.0.1:9001/x?REDACTED\" in SITE 1")]
    [InlineData("ftp://u:hunter2@h:9000", "unexpected scheme \"ftp\" in \"ftp://REDACTED@h:9000\"")]
    public void Sites_without_a_scheme_never_echo_credentials(string site, string expected)
    {
        var message = Assert.Throws<FatalException>(() => SiteParser.Parse([site], "sidekick", "/", "/", 0)).Message;
        Assert.StartsWith(expected, message, StringComparison.Ordinal);
        Assert.DoesNotContain("hunter2", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Underscores_in_host_names_are_accepted()
    {
        var site = Assert.Single(SiteParser.Parse(["http://minio_1:9000"], "sidekick", "/health", "/health", 0));
        Assert.Equal("http://minio_1:9000", Assert.Single(site.Backends).EndpointText);
    }

    [Theory]
    [InlineData("http://minio1:9000", "/minio/health/ready", 0, "http://minio1:9000/minio/health/ready")]
    [InlineData("http://minio1:9000", "/minio/health/ready", 4242, "http://minio1:4242/minio/health/ready")]
    [InlineData("http://minio1:9000", "/minio/health/ready", 65535, "http://minio1:65535/minio/health/ready")]
    [InlineData("http://h:80/", "/x", 0, "http://h/x")]
    [InlineData("https://h:443", "/x/", 0, "https://h/x/")]
    [InlineData("http://h:9000/base/", "/../health", 0, "http://h:9000/health")]
    [InlineData("http://[::1]:9000", "/health", 9001, "http://[::1]:9001/health")]
    public void Probe_urls(string endpoint, string path, int port, string expected) =>
        Assert.Equal(expected, SiteParser.ProbeUri(new Uri(endpoint), path, port).ToString());

    [Fact]
    public void The_last_site_uses_the_read_health_path()
    {
        var sites = SiteParser.Parse(["http://a:1", "http://b:1"], "sidekick", "/minio/health/cluster", "/minio/health/cluster/read", 0);
        Assert.Equal("/minio/health/cluster", sites[0].Backends[0].ProbeUri.AbsolutePath);
        Assert.Equal("/minio/health/cluster/read", sites[1].Backends[0].ProbeUri.AbsolutePath);
        Assert.Equal(2, sites[1].Number);
        Assert.Equal("http://a:1", sites[0].Backends[0].EndpointText);
    }
}
