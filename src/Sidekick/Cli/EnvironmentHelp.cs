using Sidekick.Caching;
using Sidekick.Forwarding.Http1;
using Sidekick.Networking;
using Sidekick.Security;

namespace Sidekick.Cli;

/// <summary>One environment variable sidekick reads, as --help lists it.</summary>
internal sealed record EnvironmentVariable(string Name, string Usage, string? DefaultText);

/// <summary>
/// The ENVIRONMENT section of --help: every variable sidekick reads (errors say "see 'sidekick --help'",
/// so a bad variable must be findable there), with its default. Names come from the code that reads them.
/// </summary>
internal static class EnvironmentHelp
{
    private const string Cache = CacheOptions.Prefix;

    public static readonly EnvironmentVariable[] All =
    [
        new(KeyPassword.Variable, "password of an encrypted --key, kept out of the process list (--key-password-file and --key-password win)", null),
        new(EventLoops.Variable, "socket engine: 'epoll' (sidekick's event loops) or 'dotnet' (.NET's)", "\"epoll\" on Linux"),
        new(EventLoops.ThreadsVariable, "event loop threads, 1 to 1024", "half the cores, at least 1"),
        new(ForwarderChoice.Variable, "'http1' (plain requests on sidekick's HTTP/1.1 path, the rest through YARP) or 'yarp' (all through YARP)", "\"http1\""),
        new(Cache + "ENDPOINT", "http:// or https:// URL of the S3 store of the shared cache; unset: no cache", null),
        new(Cache + "ACCESS_KEY", "the store's access key (required with the endpoint)", null),
        new(Cache + "SECRET_KEY", "the store's secret key (required with the endpoint; never printed)", null),
        new(Cache + "BUCKET", "the cache's bucket, which must exist (required with the endpoint)", null),
        new(Cache + "REGION", "signing region", "\"us-east-1\""),
        new(Cache + "NAMESPACE", "the bucket folder of this sidecar's entries; sidecars share entries only in the same folder", "a hash of the backends"),
        new(Cache + "PATH_STYLE", "path-style bucket addressing", "true"),
        new(Cache + "SHARE_PUBLIC", "serve an entry filled with credentials to anyone when it was marked public or s-maxage (risky: see docs/cache.md)", "false"),
        new(Cache + "MIN_SIZE", "smallest response stored (Content-Length), e.g. 64MB or 32MiB", "1MiB"),
        new(Cache + "MAX_SIZE", "largest response stored", "5GiB"),
        new(Cache + "HEALTH_DURATION", "store probe interval: seconds or a duration such as 20s", "60"),
        new(Cache + "DEFAULT_MAX_AGE", "freshness of responses with neither freshness information nor Last-Modified", "0"),
        new(Cache + "PART_SIZE", "multipart part size, 5MiB to 512MiB", "5MiB"),
        new(Cache + "SPOOL_DIR", "where fills spool bodies for the upload", "<temp>/sidekick-spool"),
        new(Cache + "SPOOL_SIZE", "spool space all fills in flight may use together; unset: the larger of 4GiB and MAX_SIZE", "5GiB"),
        new(Cache + "MAX_LAG", "removed: fills no longer race the client (they spool); refused at start", null),
        new(Cache + "MAX_FILLS", "fills running at once; further misses are not stored", "64"),
        new(Cache + "FILL_WAIT", "how long a miss may wait for another sidecar's fill of the same object; 0: no fill leases", "10s"),
        new("HTTP_PROXY, HTTPS_PROXY", "proxy for requests and probes to http:// and https:// backends (lowercase names too)", null),
        new("NO_PROXY", "hosts reached without the proxy (lowercase name too)", null),
        new("NO_COLOR, TERM=dumb", "no colours on a terminal", null),
        new("DOTNET_*, MALLOC_ARENA_MAX", "runtime tuning (GC, sockets, thread pool, glibc arenas): see docs/configuration.md", null),
    ];

    /// <summary>The section as --help prints it, aligned like the flags.</summary>
    public static IEnumerable<(string Name, string Usage)> Rows =>
        All.Select(v => (v.Name, v.Usage + (v.DefaultText is null ? "" : $" (default: {v.DefaultText})")));
}
