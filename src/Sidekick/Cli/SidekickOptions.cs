namespace Sidekick.Cli;

/// <summary>
/// Everything the command line says, validated once. Defaults match the Go sidekick.
/// Runtime components read from this record; nothing mutates it after parsing.
/// </summary>
internal sealed record SidekickOptions
{
    public string Address { get; init; } = ":8080";
    /// <summary>Lines for stderr about values accepted as upstream accepts them but likely not meant (one each).</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];
    public string HealthPath { get; init; } = "/";
    /// <summary>Probe path for the last site only; empty means <see cref="HealthPath"/> (the parser resolves it).</summary>
    public string ReadHealthPath { get; init; } = "";
    public int HealthPort { get; init; }
    public TimeSpan HealthDuration { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan HealthTimeout { get; init; } = TimeSpan.FromSeconds(10);
    public bool HealthOptimistic { get; init; }
    public bool Insecure { get; init; }
    public bool RoundRobinDns { get; init; }
    public string HostBalance { get; init; } = "least";

    // Observability
    public bool Log { get; init; }
    /// <summary>Trace filter: all, application or minio; empty disables trace printing.</summary>
    public string Trace { get; init; } = "all";
    /// <summary>True when --trace was given on the command line (forces console mode, as upstream).</summary>
    public bool TraceExplicit { get; init; }
    public bool Quiet { get; init; }
    public bool Json { get; init; }
    public bool Debug { get; init; }
    public bool ErrorsOnly { get; init; }
    public IReadOnlyList<int> StatusCodes { get; init; } = [];
    public string? Pprof { get; init; }
    /// <summary>
    /// Where /v1/state, the metrics, /v1/certificates and --pprof's routes are served instead of the proxy port
    /// (ours); null keeps upstream's layout, everything on the proxy port.
    /// </summary>
    public string? AdminAddress { get; init; }

    // TLS
    public string? AutoTlsHost { get; init; }
    public string? CaCert { get; init; }
    public string? ClientCert { get; init; }
    public string? ClientKey { get; init; }
    public string? Cert { get; init; }
    public string? Key { get; init; }
    public string? KeyPassword { get; init; }
    /// <summary>A file holding the key's password (ours: a command line is visible to every user).</summary>
    public string? KeyPasswordFile { get; init; }
    public string TlsMax { get; init; } = "1.3";

    // DNS
    public TimeSpan DnsTtl { get; init; } = TimeSpan.FromMinutes(10);

    // Retries
    /// <summary>Attempts per request when earlier ones provably did not reach a backend (1 = no retries).</summary>
    public int MaxAttempts { get; init; } = 3;
    /// <summary>Largest idempotent request body (PUT, DELETE) buffered so it can be replayed elsewhere.</summary>
    public long MaxReplayBytes { get; init; } = 1024 * 1024;
    /// <summary>Retries allowed as a share of recent requests.</summary>
    public double RetryBudgetRatio { get; init; } = 0.2;
    /// <summary>Retries always allowed per second, whatever the traffic.</summary>
    public int RetryBudgetMinPerSecond { get; init; } = 10;

    // Outlier detection and failback
    /// <summary>Consecutive 502/503/504 answers that eject a backend; 0 disables outlier detection.</summary>
    public int OutlierConsecutiveErrors { get; init; } = 5;
    /// <summary>First ejection time; each further ejection of the same backend adds as much again.</summary>
    public TimeSpan OutlierEjectionTime { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Longest ejection.</summary>
    public TimeSpan OutlierMaxEjectionTime { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>Most of a site (in percent) that may be ejected at once.</summary>
    public int OutlierMaxEjectionPercent { get; init; } = 50;
    /// <summary>How long a recovered backend takes to reach a full share of requests (least balancer).</summary>
    public TimeSpan SlowStart { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>How long an earlier site must stay healthy after recovering before traffic returns to it.</summary>
    public TimeSpan FailbackHoldDown { get; init; } = TimeSpan.Zero;

    // Waiting for a backend
    /// <summary>How long a request that finds no backend waits for one before its 502; zero fails at once (upstream).</summary>
    public TimeSpan WaitForBackend { get; init; } = TimeSpan.FromSeconds(3);
    /// <summary>Requests allowed to wait for a backend at once; more get their 502 at once.</summary>
    public int WaitQueue { get; init; } = 1024;

    // Backend-side bounds
    /// <summary>Longest silence from a backend: before the response head, and between reads of its body. Zero: none.</summary>
    public TimeSpan BackendTimeout { get; init; } = TimeSpan.FromMinutes(5);

    // Client-side limits (slow or idle clients must not starve others)
    /// <summary>Open client connections allowed at once; null = unlimited.</summary>
    public long? MaxConnections { get; init; }
    /// <summary>True when --max-connections was given; otherwise the limit follows the descriptor limit.</summary>
    public bool MaxConnectionsSet { get; init; }
    /// <summary>Slowest request body accepted, in bytes per second after a 5 s grace; zero: no minimum.</summary>
    public long ClientMinBodyRate { get; init; } = 240;
    /// <summary>Total size of a request's header block.</summary>
    public int MaxHeaderBytes { get; init; } = 64 * 1024;
    /// <summary>Longest request line (method, target, version); presigned URLs can be long.</summary>
    public int MaxRequestLineBytes { get; init; } = 16 * 1024;
    /// <summary>How long an idle keep-alive client connection stays open.</summary>
    public TimeSpan ClientIdleTimeout { get; init; } = TimeSpan.FromSeconds(130);
    /// <summary>How long a client may take to send its request headers.</summary>
    public TimeSpan ClientHeaderTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Peers whose forwarding fields are passed on (addresses and CIDR ranges, comma-separated; empty: none).</summary>
    public string TrustedProxies { get; init; } = Forwarding.TrustedProxies.DefaultText;
    /// <summary>How long a client may take no response bytes while some wait for it; zero: no limit.</summary>
    public TimeSpan ClientSendTimeout { get; init; } = TimeSpan.FromMinutes(5);

    // Lifecycle
    /// <summary>How long SIGTERM/SIGINT waits for in-flight requests before closing them.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The SITE arguments in failover order, as typed.</summary>
    public IReadOnlyList<string> Sites { get; init; } = [];

    /// <summary>argv[0] as the user typed it (used in messages like upstream).</summary>
    public string ProgramName { get; init; } = "sidekick";
}
