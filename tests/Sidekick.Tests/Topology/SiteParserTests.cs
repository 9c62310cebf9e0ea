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
    public void An_endpoint_listed_twice_is_two_numbered_backends_with_one_warning_and_keeps_both_across_a_reload()
    {
        var warnings = new List<string>();
        var sites = SiteParser.Parse(["http://a:9000,http://b:9000,http://a:9000"], "sidekick", "/minio/health/live", "/minio/health/ready", 0, warnings);
        Assert.Equal([1, 1, 2], sites[0].Backends.Select(b => b.Copy));
        Assert.Equal("SITE 1: endpoint \"http://a:9000\" is listed 2 times: each copy is a backend of its own with its own share of the requests, as upstream; the metrics tell them apart by a copy label (copy=\"2\" and on)",
            Assert.Single(warnings));

        // A reload (SIGHUP) of the same command line keeps each copy's backend, its health and counters, apart.
        var builder = new TopologyBuilder(new Sidekick.Forwarding.BackendTransportFactory(), TimeProvider.System);
        var first = builder.Build(sites, TopologySnapshot.Empty);
        var reloaded = builder.Build(SiteParser.Parse(["http://a:9000,http://b:9000,http://a:9000"], "sidekick", "/minio/health/live", "/minio/health/ready", 0), first);
        Assert.Equal(first.Sites[0].Backends, reloaded.Sites[0].Backends);
        Assert.Equal(3, reloaded.Sites[0].Backends.Distinct().Count());
    }

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
    [InlineData("http://a{1...2}:9000,http://c:9000", "ranges are expanded only when every pool of the SITE has one (\"http://c:9000\" has none)")]
    [InlineData("http://u:hunter2@a{1...2}:9000,http://c:9000", "unable to parse input arg http://REDACTED@a{1...2}:9000")]
    [InlineData("http://h{0...18446744073709551615}:9000", "it expands to more than 10,000 backends")]
    [InlineData("http://h{1...4294967296}:9000", "it expands to more than 10,000 backends")]
    [InlineData("http://h{1...200}.z{1...200}:9000", "it expands to more than 10,000 backends")]
    [InlineData("http://n{A...C}:9000", "invalid ellipsis format")]
    [InlineData("http://n{3...1}:9000", "incorrect range start 3 cannot be bigger than end 1")]
    [InlineData("http://n{a...z}:9000", "invalid range bound \"z\"")]
    [InlineData("http://h{1...4}/{x}", "invalid ellipsis format")]
    [InlineData("minio1:9000", "missing host address")]
    [InlineData("ftp://h:9000", "unexpected scheme \"ftp\" in \"ftp://h:9000\", should be http or https")]
    [InlineData("http://h:99999", "invalid port")]
    [InlineData("http://a:9000,", "missing host address \"\"")]
    [InlineData("http://a:9000,https://b:9000", "mixes http and https")]
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
    [InlineData("http://u:hunter2@h:99999", "invalid port in \"http://REDACTED@h:99999\": must be a number in [1, 65535]")]
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

    // As Go's sidekick: user information is accepted, kept off proxied requests and sent by the probes as Basic
    // credentials (url.UserPassword: percent-decoded, a user alone has an empty password). The endpoint, the text
    // shown for it and the probe URL carry none of it, nor does the definition as text.
    [Theory]
    [InlineData("http://admin:pa55w0rd@127.0.0.1:9001", "admin", "pa55w0rd", "http://127.0.0.1:9001", "http://127.0.0.1:9001/minio/health/ready")]
    [InlineData("http://us%40er:p%3Aa%2Fss+w%25@h:9000/base/", "us@er", "p:a/ss+w%", "http://h:9000/base", "http://h:9000/base/minio/health/ready")]
    [InlineData("http://u:p@ss:w@h:9000", "u", "p@ss:w", "http://h:9000", "http://h:9000/minio/health/ready")]
    [InlineData("https://T0KEN@[::1]:9000", "T0KEN", "", "https://[::1]:9000", "https://[::1]:9000/minio/health/ready")]
    [InlineData("http://%C3%A9l%C3%A8ve:%E2%82%AC@h", "élève", "€", "http://h", "http://h/minio/health/ready")]
    public void User_information_becomes_the_probes_basic_credentials(string site, string user, string password, string shown, string probe)
    {
        var backend = Assert.Single(Assert.Single(SiteParser.Parse([site], "sidekick", "/minio/health/ready", "/minio/health/ready", 0)).Backends);
        var credentials = Assert.IsType<BasicCredentials>(backend.ProbeCredentials);
        Assert.Equal(user, credentials.User);
        Assert.Equal(password, credentials.Password);
        Assert.Equal("Basic " + Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes($"{user}:{password}")), credentials.HeaderValue);
        Assert.Equal(shown, backend.EndpointText);
        Assert.Equal(probe, backend.ProbeUri.ToString());
        Assert.Equal("", backend.Endpoint.UserInfo);
        Assert.Equal("", backend.ProbeUri.UserInfo);
        Assert.DoesNotContain('@', backend.Endpoint.GetLeftPart(UriPartial.Authority));
        Assert.DoesNotContain('@', backend.ToString());
        Assert.DoesNotContain(user, backend.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(credentials.HeaderValue[6..], backend.ToString(), StringComparison.Ordinal);
        if (password.Length > 0)
        {
            Assert.DoesNotContain(password, backend.ToString(), StringComparison.Ordinal);
        }
        Assert.Contains("ProbeCredentials = REDACTED", backend.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Credentials_are_the_decoded_bytes_even_when_they_are_not_utf8()
    {
        // Go's strings are bytes: %FF is sent as the byte 0xFF.
        var backend = Assert.Single(Assert.Single(SiteParser.Parse(["http://u:%FF%zz@h:1"], "sidekick", "/", "/", 0)).Backends);
        Assert.Equal("Basic " + Convert.ToBase64String([(byte)'u', (byte)':', 0xFF, (byte)'%', (byte)'z', (byte)'z']), backend.ProbeCredentials!.HeaderValue);
        Assert.Null(Assert.Single(Assert.Single(SiteParser.Parse(["http://h:1"], "sidekick", "/", "/", 0)).Backends).ProbeCredentials);
    }

    [Fact]
    public void Endpoints_differing_only_in_credentials_compare_by_value_without_printing_them()
    {
        BackendDefinition Of(string site) => SiteParser.Parse([site], "sidekick", "/", "/", 0)[0].Backends[0];
        Assert.Equal(Of("http://u:one@h:1"), Of("http://u:one@h:1"));
        Assert.NotEqual(Of("http://u:one@h:1"), Of("http://u:two@h:1"));
        Assert.Equal(Of("http://u:one@h:1").EndpointText, Of("http://u:two@h:1").EndpointText);
    }

    // Upstream glues the health path into an endpoint's query (its probe then asks for "/"); here a query or a
    // fragment is dropped, for requests and probes alike, with one warning line per SITE.
    [Fact]
    public void A_query_or_fragment_is_ignored_with_one_warning_per_site()
    {
        var warnings = new List<string>();
        var sites = SiteParser.Parse(["http://h{1...3}:9000/?tok=hunter2", "http://b:1#frag", "http://c:1"], "sidekick", "/health", "/health?ready=1", 0, warnings);
        Assert.Equal(
        [
            "SITE 1: the query and fragment of endpoint \"http://h1:9000\" (and 2 more) are ignored: requests keep the client's path and query, probes use the health path",
            "SITE 2: the query and fragment of endpoint \"http://b:1\" are ignored: requests keep the client's path and query, probes use the health path",
        ], warnings);
        Assert.Equal(["http://h1:9000", "http://h2:9000", "http://h3:9000"], sites[0].Backends.Select(b => b.EndpointText));
        Assert.Equal("http://h2:9000/health", sites[0].Backends[1].ProbeUri.ToString());
        Assert.Equal("", sites[0].Backends[1].Endpoint.Query);
        Assert.Equal("http://b:1", sites[1].Backends[0].EndpointText);
        Assert.Equal("", sites[1].Backends[0].Endpoint.Fragment);
        Assert.Equal("http://c:1/health?ready=1", sites[2].Backends[0].ProbeUri.ToString());
        Assert.Null(sites[0].Backends[0].ProbeCredentials);
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
