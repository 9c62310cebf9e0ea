using Sidekick.Caching;
using Sidekick.Forwarding;
using Sidekick.Forwarding.Http1;
using Sidekick.Networking;

namespace Sidekick.Hosting;

/// <summary>
/// What sidekick takes from its environment rather than its command line, read and validated once, beside
/// <see cref="Cli.SidekickOptions"/>: the socket engine and its threads, the forwarding path, an HTTP proxy
/// for backend traffic, the shared cache and the key password variable. Nothing else reads these variables.
/// </summary>
internal sealed record RuntimeSettings
{
    /// <summary>Upstream honours these for backend traffic; so does sidekick, through HttpClient (hence YARP).</summary>
    private static readonly string[] ProxyVariables = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"];

    /// <summary>Sockets go through sidekick's event loops (SIDEKICK_IO=epoll, the default on Linux) rather than .NET's engine.</summary>
    public bool EventLoops { get; init; }

    /// <summary>How many event loops run (SIDEKICK_IO_THREADS).</summary>
    public int IoThreads { get; init; }

    /// <summary>Why the HTTP/1.1 path is off for every request (SIDEKICK_FORWARDER=yarp, an HTTP proxy), or null.</summary>
    public PathReason? Http1PathOff { get; init; }

    /// <summary>HTTP_PROXY or HTTPS_PROXY (either case) is set: backend traffic goes through that proxy, as upstream's does.</summary>
    public bool EnvironmentProxy { get; init; }

    /// <summary>The shared cache's settings (SIDEKICK_CACHE_*), or null when the cache is off.</summary>
    public CacheOptions? Cache { get; init; }

    /// <summary>SIDEKICK_KEY_PASSWORD, for a key whose password no flag gave.</summary>
    public string? KeyPassword { get; init; }

    /// <summary>
    /// Reads and validates every variable: a bad engine, thread count or forwarder is a fatal error (exit 1), a
    /// bad cache variable a usage error (exit 2), each one line naming the value.
    /// </summary>
    public static RuntimeSettings From(IReadOnlyDictionary<string, string?> environment)
    {
        string? Get(string name) => environment.TryGetValue(name, out var value) ? value : null;
        var proxy = ProxyVariables.Any(name => !string.IsNullOrEmpty(Get(name)));
        return new RuntimeSettings
        {
            EventLoops = Networking.EventLoops.Chosen(Get(Networking.EventLoops.Variable)),
            IoThreads = Networking.EventLoops.Threads(Get(Networking.EventLoops.ThreadsVariable)),
            Http1PathOff = !ForwarderChoice.UsesHttp1Path(Get(ForwarderChoice.Variable)) ? PathReason.Forced : proxy ? PathReason.HttpProxy : null,
            EnvironmentProxy = proxy,
            Cache = CacheOptions.FromEnvironment(environment),
            KeyPassword = Get(Security.KeyPassword.Variable) is { Length: > 0 } password ? password : null,
        };
    }

    /// <summary>The process environment with <paramref name="overrides"/> laid over it (tests, the demo).</summary>
    public static Dictionary<string, string?> ProcessEnvironment(IReadOnlyDictionary<string, string?>? overrides = null)
    {
        var variables = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            variables[(string)entry.Key] = entry.Value as string;
        }

        foreach (var (name, value) in overrides ?? new Dictionary<string, string?>())
        {
            variables[name] = value;
        }

        return variables;
    }
}
