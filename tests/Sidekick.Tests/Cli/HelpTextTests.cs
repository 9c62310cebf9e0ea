using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using Sidekick.Caching;
using Sidekick.Cli;

namespace Sidekick.Tests.Cli;

/// <summary>--help lists every environment variable with the default the code really uses.</summary>
public sealed class HelpTextTests
{
    private static readonly string Help = HelpText.Render("sidekick");

    private static string HelpDefault(string name) =>
        EnvironmentHelp.All.Single(v => v.Name == name).DefaultText ?? throw new InvalidOperationException(name + " has no default in --help");

    [Theory]
    [InlineData("SIDEKICK_KEY_PASSWORD")]
    [InlineData("SIDEKICK_IO")]
    [InlineData("SIDEKICK_IO_THREADS")]
    [InlineData("SIDEKICK_FORWARDER")]
    [InlineData("HTTP_PROXY, HTTPS_PROXY")]
    [InlineData("NO_PROXY")]
    public void The_environment_section_lists_the_variable(string name)
    {
        var section = Help[Help.IndexOf("\nENVIRONMENT:\n", StringComparison.Ordinal)..Help.IndexOf("\nSITE:\n", StringComparison.Ordinal)];
        Assert.Contains("\n  " + name + " ", section, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_cache_variable_the_code_reads_is_listed()
    {
        var environment = new RecordingEnvironment
        {
            ["SIDEKICK_CACHE_ENDPOINT"] = "http://cache:9000",
            ["SIDEKICK_CACHE_ACCESS_KEY"] = "a",
            ["SIDEKICK_CACHE_SECRET_KEY"] = "s",
            ["SIDEKICK_CACHE_BUCKET"] = "bkt",
        };
        CacheOptions.FromEnvironment(environment);
        Assert.NotEmpty(environment.Read);
        foreach (var name in environment.Read)
        {
            Assert.Contains(EnvironmentHelp.All, v => v.Name == name);
        }
    }

    [Fact]
    public void Cache_defaults_in_help_are_the_codes_defaults()
    {
        var defaults = CacheOptions.FromEnvironment(new Dictionary<string, string?>
        {
            ["SIDEKICK_CACHE_ENDPOINT"] = "http://cache:9000",
            ["SIDEKICK_CACHE_ACCESS_KEY"] = "a",
            ["SIDEKICK_CACHE_SECRET_KEY"] = "s",
            ["SIDEKICK_CACHE_BUCKET"] = "bkt",
        })!;
        static long Bytes(string text) => ByteSize.TryParse(text, out var bytes) ? bytes : throw new FormatException(text);
        Assert.Equal(defaults.MinSize, Bytes(HelpDefault("SIDEKICK_CACHE_MIN_SIZE")));
        Assert.Equal(defaults.MaxSize, Bytes(HelpDefault("SIDEKICK_CACHE_MAX_SIZE")));
        Assert.Equal(defaults.PartSize, Bytes(HelpDefault("SIDEKICK_CACHE_PART_SIZE")));
        Assert.Equal(defaults.SpoolSize, Bytes(HelpDefault("SIDEKICK_CACHE_SPOOL_SIZE")));
        Assert.Equal(defaults.MaxFills, int.Parse(HelpDefault("SIDEKICK_CACHE_MAX_FILLS"), CultureInfo.InvariantCulture));
        Assert.Equal(defaults.HealthInterval, TimeSpan.FromSeconds(int.Parse(HelpDefault("SIDEKICK_CACHE_HEALTH_DURATION"), CultureInfo.InvariantCulture)));
        Assert.Equal(defaults.DefaultMaxAge, TimeSpan.FromSeconds(int.Parse(HelpDefault("SIDEKICK_CACHE_DEFAULT_MAX_AGE"), CultureInfo.InvariantCulture)));
        Assert.Equal($"\"{defaults.Region}\"", HelpDefault("SIDEKICK_CACHE_REGION"));
        Assert.Equal(defaults.PathStyle, bool.Parse(HelpDefault("SIDEKICK_CACHE_PATH_STYLE")));
        Assert.Equal(defaults.SharePublic, bool.Parse(HelpDefault("SIDEKICK_CACHE_SHARE_PUBLIC")));
        Assert.True(GoDuration.TryParse(HelpDefault("SIDEKICK_CACHE_FILL_WAIT"), out var fillWait));
        Assert.Equal(defaults.FillWait, fillWait);
    }

    [Fact]
    public void Engine_defaults_in_help_are_the_codes_defaults()
    {
        Assert.True(Sidekick.Networking.EventLoops.Chosen(null) == Sidekick.Networking.EventLoops.Chosen("epoll"));
        Assert.StartsWith("\"epoll\"", HelpDefault("SIDEKICK_IO"), StringComparison.Ordinal);
        Assert.Equal(Sidekick.Forwarding.Http1.ForwarderChoice.UsesHttp1Path(null), Sidekick.Forwarding.Http1.ForwarderChoice.UsesHttp1Path("http1"));
        Assert.Equal("\"http1\"", HelpDefault("SIDEKICK_FORWARDER"));
        Assert.Equal(Math.Max(1, Environment.ProcessorCount / 2), Sidekick.Networking.EventLoops.Threads(null));
        Assert.Equal("half the cores, at least 1", HelpDefault("SIDEKICK_IO_THREADS"));
    }

    /// <summary>An environment that remembers which variables were looked up.</summary>
    private sealed class RecordingEnvironment : Dictionary<string, string?>, IReadOnlyDictionary<string, string?>
    {
        public HashSet<string> Read { get; } = [];

        bool IReadOnlyDictionary<string, string?>.TryGetValue(string key, [MaybeNullWhen(false)] out string? value)
        {
            Read.Add(key);
            return TryGetValue(key, out value);
        }

        bool IReadOnlyDictionary<string, string?>.ContainsKey(string key)
        {
            Read.Add(key);
            return ContainsKey(key);
        }

        string? IReadOnlyDictionary<string, string?>.this[string key]
        {
            get
            {
                Read.Add(key);
                return this[key];
            }
        }
    }
}
