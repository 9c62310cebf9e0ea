namespace Sidekick.Cli;

/// <summary>Every flag sidekick accepts, in help order. Upstream's names, aliases and defaults come first.</summary>
internal static class Flags
{
    public static readonly FlagDefinition[] All =
    [
        new(["address", "a"], FlagKind.String, "listening address for sidekick", "\":8080\"", static (o, v) => o with { Address = v.Text }),
        new(["health-path", "p"], FlagKind.String, "health check path", null, static (o, v) => o with { HealthPath = v.Text }),
        new(["read-health-path", "r"], FlagKind.String, "health check path for read access - valid only for failover site", null, static (o, v) => o with { ReadHealthPath = v.Text }),
        new(["health-port"], FlagKind.Int, "health check port", "0", static (o, v) => o with { HealthPort = checked((int)v.Int) }),
        new(["health-duration", "d"], FlagKind.Duration, "health check interval (a duration, e.g. 5s)", "5s", static (o, v) => o with { HealthDuration = v.Duration }),
        new(["health-timeout"], FlagKind.Duration, "health check timeout (a duration, e.g. 10s)", "10s", static (o, v) => o with { HealthTimeout = v.Duration }),
        new(["insecure", "i"], FlagKind.Bool, "disable TLS certificate verification", null, static (o, v) => o with { Insecure = v.Bool }),
        new(["rr-dns-mode"], FlagKind.Bool, "enable round-robin DNS mode", null, static (o, v) => o with { RoundRobinDns = v.Bool }),
        new(["health-optimistic"], FlagKind.Bool, "only perform health requests when nodes are down", null, static (o, v) => o with { HealthOptimistic = v.Bool }),
        new(["auto-tls-host"], FlagKind.String, "enable auto TLS mode for the specified host", null, static (o, v) => o with { AutoTlsHost = v.Text }),
        new(["log", "l"], FlagKind.Bool, "enable logging", null, static (o, v) => o with { Log = v.Bool }),
        new(["trace", "t"], FlagKind.String, "enable request tracing - valid values are [all,application,minio]", "\"all\"", static (o, v) => o with { Trace = v.Text, TraceExplicit = true }),
        new(["quiet", "q"], FlagKind.Bool, "disable console messages", null, static (o, v) => o with { Quiet = v.Bool }),
        new(["json"], FlagKind.Bool, "output sidekick logs and trace in json format", null, static (o, v) => o with { Json = v.Bool }),
        new(["debug"], FlagKind.Bool, "output verbose trace", null, static (o, v) => o with { Debug = v.Bool }),
        new(["cacert"], FlagKind.String, "CA certificate to verify peer against", null, static (o, v) => o with { CaCert = v.Text }),
        new(["client-cert"], FlagKind.String, "client certificate file", null, static (o, v) => o with { ClientCert = v.Text }),
        new(["client-key"], FlagKind.String, "client private key file", null, static (o, v) => o with { ClientKey = v.Text }),
        new(["cert"], FlagKind.String, "server certificate file", null, static (o, v) => o with { Cert = v.Text }),
        new(["key"], FlagKind.String, "server private key file", null, static (o, v) => o with { Key = v.Text }),
        new(["key-password"], FlagKind.String, "server private key password (visible to every user in the process list: prefer --key-password-file or SIDEKICK_KEY_PASSWORD)", null, static (o, v) => o with { KeyPassword = v.Text }),
        new(["key-password-file"], FlagKind.String, "file holding the server private key password (a trailing newline is ignored)", null, static (o, v) => o with { KeyPasswordFile = v.Text }),
        new(["pprof"], FlagKind.String, "start and listen for profiling on the specified address (e.g. :1337)", null, static (o, v) => o with { Pprof = v.Text }, Placeholder: ":1337"),
        new(["dns-ttl"], FlagKind.Duration, "choose custom DNS TTL value for DNS refreshes for load balanced endpoints", "10m0s", static (o, v) => o with { DnsTtl = v.Duration }),
        new(["errors", "e"], FlagKind.Bool, "filter out any non-error responses", null, static (o, v) => o with { ErrorsOnly = v.Bool }),
        new(["status-code"], FlagKind.IntList, "filter by given status code (repeat the flag or give a comma list)", null, static (o, v) => o with { StatusCodes = [.. o.StatusCodes, .. v.Ints!] }),
        new(["host-balance"], FlagKind.String, "specify the algorithm to select backend host when load balancing, supported values are 'least', 'random'", "\"least\"", static (o, v) => o with { HostBalance = v.Text }),
        new(["tls-max"], FlagKind.String, "maximum TLS version: 1.2 or 1.3", "\"1.3\"", static (o, v) => o with { TlsMax = v.Text }, Hidden: true),

        // Ours: resilience, limits and lifecycle.
        new(["max-attempts"], FlagKind.Int, "attempts per request when earlier ones failed before reaching a backend (1 = no retries)", "3", static (o, v) => o with { MaxAttempts = checked((int)v.Int) }),
        new(["retry-budget"], FlagKind.Int, "retries allowed as a percentage of recent requests (plus 10 per second)", "20", static (o, v) => o with { RetryBudgetRatio = v.Int / 100.0 }),
        new(["max-replay-size"], FlagKind.Bytes, "largest idempotent request body (PUT, DELETE) buffered to replay on another backend", "1MiB", static (o, v) => o with { MaxReplayBytes = v.Int }),
        new(["outlier-errors"], FlagKind.Int, "consecutive 502/503/504 answers that eject a backend (0 disables)", "5", static (o, v) => o with { OutlierConsecutiveErrors = checked((int)v.Int) }),
        new(["outlier-ejection"], FlagKind.Duration, "first ejection time; it grows with each ejection of the same backend", "30s", static (o, v) => o with { OutlierEjectionTime = v.Duration }),
        new(["outlier-max-percent"], FlagKind.Int, "most of a site, in percent, that may be ejected at once", "50", static (o, v) => o with { OutlierMaxEjectionPercent = checked((int)v.Int) }),
        new(["slow-start"], FlagKind.Duration, "time a recovered backend takes to reach a full share of requests", "10s", static (o, v) => o with { SlowStart = v.Duration }),
        new(["failback-hold"], FlagKind.Duration, "time an earlier site must stay healthy before traffic returns to it", "0s", static (o, v) => o with { FailbackHoldDown = v.Duration }),
        new(["wait-for-backend"], FlagKind.Duration, "how long a request that finds no backend up waits for one before its 502 (0 = fail at once)", "3s", static (o, v) => o with { WaitForBackend = v.Duration }),
        new(["wait-queue"], FlagKind.Int, "requests that may wait for a backend at once; more get their 502 at once", "1024", static (o, v) => o with { WaitQueue = (int)Math.Clamp(v.Int, -1, int.MaxValue) }),
        new(["backend-timeout"], FlagKind.Duration, "longest a backend may stay silent: before its response head and between body reads (0 = no limit)", "5m0s", static (o, v) => o with { BackendTimeout = v.Duration }),
        new(["max-connections"], FlagKind.Int, "client connections allowed at once (0 = unlimited; default: two thirds of the descriptor limit)", null, static (o, v) => o with { MaxConnections = v.Int == 0 ? null : v.Int, MaxConnectionsSet = true }),
        new(["client-min-body-rate"], FlagKind.Bytes, "slowest request body accepted, per second after a 5s grace (0 = no minimum)", "240B", static (o, v) => o with { ClientMinBodyRate = v.Int }),
        new(["max-header-size"], FlagKind.Bytes, "largest request header block accepted from a client", "64KiB", static (o, v) => o with { MaxHeaderBytes = checked((int)v.Int) }),
        new(["client-idle-timeout"], FlagKind.Duration, "how long an idle client connection stays open", "2m10s", static (o, v) => o with { ClientIdleTimeout = v.Duration }),
        new(["client-header-timeout"], FlagKind.Duration, "how long a client may take to send its request headers", "30s", static (o, v) => o with { ClientHeaderTimeout = v.Duration }),
        new(["trusted-proxies"], FlagKind.String, "peers (IPs, CIDR ranges, comma-separated) whose X-Forwarded-For chain is continued and whose Forwarded, X-Forwarded-Proto, -Scheme, -Host (and the like) are passed on; other clients' are replaced or dropped", "\"127.0.0.0/8,::1\"", static (o, v) => o with { TrustedProxies = v.Text }),
        new(["client-send-timeout"], FlagKind.Duration, "how long a client may take no response bytes while some wait for it; its connection is then closed (0 = no limit)", "5m0s", static (o, v) => o with { ClientSendTimeout = v.Duration }),
        new(["admin-address"], FlagKind.String, "serve /v1/state, the metrics, /v1/certificates and the --pprof routes on this address instead of the proxy port (\":9091\" = 127.0.0.1:9091)", null, static (o, v) => o with { AdminAddress = v.Text }, Placeholder: ":9091"),
        new(["shutdown-timeout"], FlagKind.Duration, "on SIGTERM/SIGINT, how long in-flight requests may finish before exit", "30s", static (o, v) => o with { ShutdownTimeout = v.Duration }),

        new(["help", "h"], FlagKind.Bool, "show help", null, static (o, _) => o),
        new(["version", "v"], FlagKind.Bool, "print the version", null, static (o, _) => o),
    ];

    public static FlagDefinition? Find(string name)
    {
        foreach (var flag in All)
        {
            if (Array.IndexOf(flag.Names, name) >= 0)
            {
                return flag;
            }
        }

        return null;
    }
}
