using Sidekick.Cli;

namespace Sidekick.Tests.Cli;

public sealed class CommandLineParserTests
{
    private static SidekickOptions Run(params string[] args) =>
        Assert.IsType<CommandLineResult.Run>(CommandLineParser.Parse("sidekick", args)).Options;

    private static string Usage(params string[] args) =>
        Assert.Throws<UsageException>(() => CommandLineParser.Parse("sidekick", args)).Message;

    [Fact]
    public void Defaults_match_upstream()
    {
        var o = Run("http://minio{1...4}:9000");
        Assert.Equal(":8080", o.Address);
        Assert.Equal("/", o.HealthPath);
        Assert.Equal("/", o.ReadHealthPath);
        Assert.Equal(TimeSpan.FromSeconds(5), o.HealthDuration);
        Assert.Equal(TimeSpan.FromSeconds(10), o.HealthTimeout);
        Assert.Equal(TimeSpan.FromMinutes(10), o.DnsTtl);
        Assert.Equal("least", o.HostBalance);
        Assert.Equal("all", o.Trace);
        Assert.False(o.TraceExplicit);
        Assert.Equal("1.3", o.TlsMax);
        Assert.Equal(["http://minio{1...4}:9000"], o.Sites);
    }

    [Theory]
    [InlineData("--address", ":8000")]
    [InlineData("-address", ":8000")]
    [InlineData("-a", ":8000")]
    [InlineData("--a", ":8000")]
    public void Every_spelling_of_a_value_flag_works(string flag, string value)
    {
        Assert.Equal(value, Run(flag, value, "http://x:1").Address);
        Assert.Equal(value, Run($"{flag}={value}", "http://x:1").Address);
    }

    [Fact]
    public void Health_paths_are_normalized_and_read_path_defaults_to_health_path()
    {
        var o = Run("--health-path", "minio/health/ready", "http://x:1");
        Assert.Equal("/minio/health/ready", o.HealthPath);
        Assert.Equal("/minio/health/ready", o.ReadHealthPath);
        Assert.Equal("/r", Run("-p", "/a", "-r", "r", "http://x:1").ReadHealthPath);
    }

    [Theory]
    [InlineData("--insecure", true)]
    [InlineData("-i", true)]
    [InlineData("--insecure=true", true)]
    [InlineData("--insecure=1", true)]
    [InlineData("--insecure=T", true)]
    [InlineData("--insecure=false", false)]
    [InlineData("--insecure=0", false)]
    [InlineData("--insecure=FALSE", false)]
    public void Boolean_spellings(string arg, bool expected) => Assert.Equal(expected, Run(arg, "http://x:1").Insecure);

    [Fact]
    public void A_boolean_never_takes_the_next_argument()
    {
        // Go flag semantics: "false" is the first positional, so it becomes a SITE.
        var o = Run("--insecure", "false", "http://x:1");
        Assert.True(o.Insecure);
        Assert.Equal(["false", "http://x:1"], o.Sites);
    }

    [Fact]
    public void Parsing_stops_at_the_first_site()
    {
        var o = Run("http://a:9000", "--log");
        Assert.False(o.Log);
        Assert.Equal(["http://a:9000", "--log"], o.Sites);
        Assert.Equal(["--x"], Run("--", "--x").Sites);
    }

    [Theory]
    [InlineData("5s", 5)]
    [InlineData("1m30s", 90)]
    public void Durations_use_go_syntax(string text, int seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), Run("-d", text, "http://x:1").HealthDuration);

    [Fact]
    public void Go_integer_literals() =>
        Assert.Equal(0x1F, Run("--health-port", "0x1F", "http://x:1").HealthPort);

    [Fact]
    public void Status_codes_repeat_and_accept_lists() =>
        Assert.Equal([500, 502, 503], Run("--status-code", "500", "--status-code=502,503", "http://x:1").StatusCodes);

    [Fact]
    public void Last_value_wins_for_repeated_flags() =>
        Assert.Equal(":2", Run("--address", ":1", "--address", ":2", "http://x:1").Address);

    [Theory]
    [InlineData("flag provided but not defined: -foo", "--foo", "http://x:1")]
    [InlineData("flag needs an argument: -address", "--address")]
    [InlineData("cannot use two forms of the same flag: -address and -a", "--address", ":1", "-a", ":2", "http://x:1")]
    [InlineData("invalid value \"5\" for flag -health-duration", "--health-duration", "5", "http://x:1")]
    [InlineData("invalid --health-duration \"0s\"", "--health-duration", "0", "http://x:1")]
    [InlineData("invalid --health-timeout \"-1s\"", "--health-timeout=-1s", "http://x:1")]
    [InlineData("invalid --dns-ttl \"0s\"", "--dns-ttl=0s", "http://x:1")]
    [InlineData("invalid health check port \"65536\"", "--health-port", "65536", "http://x:1")]
    [InlineData("invalid --host-balance \"foo\"", "--host-balance", "foo", "http://x:1")]
    [InlineData("invalid TLS max version specified '1.1'", "--tls-max", "1.1", "http://x:1")]
    [InlineData("invalid boolean value \"yes\" for -insecure", "--insecure=yes", "http://x:1")]
    [InlineData("invalid value \"5xx\" for flag -status-code", "--status-code", "5xx", "http://x:1")]
    [InlineData("no SITE given", "--log")]
    [InlineData("invalid --wait-for-backend \"-1s\": must not be negative", "--wait-for-backend=-1s", "http://x:1")]
    [InlineData("invalid --wait-queue \"-1\": must not be negative", "--wait-queue=-1", "http://x:1")]
    [InlineData("invalid --backend-timeout \"-5s\": must not be negative", "--backend-timeout", "-5s", "http://x:1")]
    [InlineData("invalid --client-send-timeout \"-1m0s\": must not be negative", "--client-send-timeout=-1m", "http://x:1")]
    [InlineData("invalid value \"-1\" for flag -client-min-body-rate", "--client-min-body-rate=-1", "http://x:1")]
    [InlineData("invalid value \"fast\" for flag -client-min-body-rate", "--client-min-body-rate", "fast", "http://x:1")]
    // 64-bit as Go reads them, for settings of 32 bits: cut to them they were other numbers (port 18500 probed).
    [InlineData("invalid value \"4294985796\" for flag -health-port: out of range", "--health-port", "4294985796", "http://x:1")]
    [InlineData("invalid value \"4294967296\" for flag -max-attempts: out of range", "--max-attempts", "4294967296", "http://x:1")]
    [InlineData("invalid value \"4GiB\" for flag -max-header-size: out of range", "--max-header-size", "4GiB", "http://x:1")]
    [InlineData("invalid value \"99999999999999999999999h\" for flag -health-duration", "--health-duration", "99999999999999999999999h", "http://x:1")]
    public void Usage_errors_name_the_value(string expected, params string[] args) =>
        Assert.Contains(expected, Usage(args), StringComparison.Ordinal);

    [Fact]
    public void A_duration_longer_than_timers_take_means_for_ever_not_a_failure_later()
    {
        // Valid for Go's flags (up to 292 years); .NET's timers take at most 2^32 - 2 ms. Taken as it was, the stop cut
        // the requests in flight, probes stopped for good and client connections closed unanswered.
        var options = Run("--shutdown-timeout", "2000h", "--health-timeout", "2000h", "--client-header-timeout", "1194h", "--dns-ttl", "2000h", "http://x:1");
        Assert.Equal(GoDuration.LongestTimer, options.ShutdownTimeout);
        Assert.Equal(GoDuration.LongestTimer, options.HealthTimeout);
        Assert.Equal(GoDuration.LongestTimer, options.ClientHeaderTimeout);
        Assert.Equal(GoDuration.LongestTimer, options.DnsTtl);
        using var timer = new CancellationTokenSource(options.ShutdownTimeout);
        Assert.Equal(TimeSpan.FromHours(1193), Run("--shutdown-timeout", "1193h", "http://x:1").ShutdownTimeout);
    }

    [Fact]
    public void Help_wins_over_version_and_lists_every_visible_flag()
    {
        var help = Assert.IsType<CommandLineResult.ShowText>(CommandLineParser.Parse("sidekick", ["-v", "-h"])).Text;
        foreach (var flag in Flags.All.Where(f => !f.Hidden))
        {
            Assert.Contains("--" + flag.Names[0], help, StringComparison.Ordinal);
        }

        Assert.DoesNotContain("tls-max", help, StringComparison.Ordinal);
        Assert.Contains("SITE:", help, StringComparison.Ordinal);
        Assert.Contains("http://minio{1...4}:9000", help, StringComparison.Ordinal);
    }

    [Fact]
    public void Version_prints_program_and_version() =>
        Assert.StartsWith("./sidekick version ", Assert.IsType<CommandLineResult.ShowText>(CommandLineParser.Parse("./sidekick", ["--version"])).Text, StringComparison.Ordinal);

    [Fact]
    public void Resilience_flags_have_their_defaults_and_zero_turns_them_off()
    {
        var defaults = Run("http://x:1");
        Assert.Equal(TimeSpan.FromSeconds(3), defaults.WaitForBackend);
        Assert.Equal(1024, defaults.WaitQueue);
        Assert.Equal(TimeSpan.FromMinutes(5), defaults.BackendTimeout);
        Assert.Equal(240, defaults.ClientMinBodyRate);
        Assert.Equal(TimeSpan.FromMinutes(5), defaults.ClientSendTimeout);
        Assert.False(defaults.MaxConnectionsSet); // the descriptor limit decides

        var off = Run("--wait-for-backend=0", "--backend-timeout", "0", "--client-min-body-rate=0", "--max-connections=0", "--client-send-timeout=0", "http://x:1");
        Assert.Equal(TimeSpan.Zero, off.WaitForBackend);
        Assert.Equal(TimeSpan.Zero, off.BackendTimeout);
        Assert.Equal(0, off.ClientMinBodyRate);
        Assert.Equal(TimeSpan.Zero, off.ClientSendTimeout);
        Assert.True(off.MaxConnectionsSet);
        Assert.Null(off.MaxConnections); // unlimited
        Assert.Equal(1000, Run("--max-connections", "1000", "http://x:1").MaxConnections);
    }

    [Fact]
    public void Empty_host_balance_means_least() => Assert.Equal("least", Run("--host-balance=", "http://x:1").HostBalance);

    [Fact]
    public void Trace_given_explicitly_is_remembered() => Assert.True(Run("--trace=all", "http://x:1").TraceExplicit);

    // Upstream accepts any --trace value and traces everything; ours does too, with one warning line naming it.
    [Theory]
    [InlineData("true", "--trace=true")]
    [InlineData("ALL", "--trace=ALL")]
    [InlineData("everything", "--trace", "everything")]
    public void Unknown_trace_values_trace_all_with_one_warning(string value, params string[] flags)
    {
        var o = Run([.. flags, "http://x:1"]);
        Assert.Equal("all", o.Trace);
        Assert.True(o.TraceExplicit);
        var warning = Assert.Single(o.Warnings);
        Assert.Equal($"--trace \"{value}\" is not one of [all,application,minio] (or \"\" to print none); tracing all", warning);
    }

    [Fact]
    public void Trace_takes_the_next_argument_even_a_flag_as_go_does()
    {
        // Go's flag package: `-t -l` gives --trace the value "-l", and --log stays off.
        var o = Run("-t", "-l", "http://x:1");
        Assert.Equal("all", o.Trace);
        Assert.False(o.Log);
        Assert.Equal(["http://x:1"], o.Sites);
        Assert.Contains("--trace \"-l\" is not one of", Assert.Single(o.Warnings), StringComparison.Ordinal);
        Assert.Contains("so -l was not read as a flag", o.Warnings[0], StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("", "--trace=")]
    [InlineData("application", "--trace=application")]
    [InlineData("minio", "-t", "minio")]
    public void Known_trace_values_warn_nothing(string value, params string[] flags)
    {
        var o = Run([.. flags, "http://x:1"]);
        Assert.Equal(value, o.Trace);
        Assert.Empty(o.Warnings);
    }
}
