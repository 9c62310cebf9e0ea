using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Sidekick.Caching;
using Sidekick.Cli;
using Sidekick.Forwarding;
using Sidekick.Health;
using Sidekick.Networking;
using Sidekick.Observability;
using Sidekick.Platform;
using Sidekick.Routing;
using Sidekick.Topology;
using Sidekick.Forwarding.Http1;
using Yarp.ReverseProxy.Forwarder;

namespace Sidekick.Hosting;

/// <summary>
/// Composes one sidekick instance: Kestrel listener, local endpoints, proxy handler, health prober and the
/// topology. Used by Program and, in-process, by the tests and the demo.
/// </summary>
internal sealed class SidekickServer : IAsyncDisposable
{
    private readonly SidekickOptions _options;
    private readonly Func<IReadOnlyList<SiteDefinition>> _loadSites;
    private readonly WebApplication _app;
    private readonly TopologyBuilder _builder;
    private readonly Lock _reloadGate = new();
    private readonly ConsoleMode _mode;
    private readonly TextWriter _stdout;
    private readonly StateLog? _stateLog;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TextWriter _stderr;
    private readonly List<PosixSignalRegistration> _signals = [];
    private int _stopSignals;
    private Task _table = Task.CompletedTask;
    private readonly Http1Forwarder _forwarder;
    private readonly TimeProvider _time;
    // Whether SIDEKICK_CACHE_NAMESPACE named the cache's folder (else it is the backends' hash).
    private readonly bool _settingsNamespace;
    private long _ejections;

    private SidekickServer(SidekickOptions options, Func<IReadOnlyList<SiteDefinition>> loadSites, SidekickSeams seams, ServerParts parts)
    {
        var settings = parts.Settings ?? RuntimeSettings.From(RuntimeSettings.ProcessEnvironment(seams.Environment));
        _options = options;
        _loadSites = loadSites;
        var time = seams.Time ?? TimeProvider.System;
        _time = time;
        _stdout = seams.Stdout ?? Console.Out;
        _stderr = seams.Stderr ?? Console.Error;
        Lines = new ConsoleLines(options.Json, options.ProgramName, time);
        _mode = ConsoleMode.From(options, seams.StdoutIsTerminal ?? !Console.IsOutputRedirected);
        // The process's console as bytes when the writer over it encodes UTF-8 (see OutputQueue); another
        // encoding keeps the writer, which converts.
        Output = seams.StdoutStream is { } console && _stdout.Encoding.CodePage == Encoding.UTF8.CodePage
            ? new OutputQueue(console, new TraceFormatter(_mode))
            : new OutputQueue(_stdout, new TraceFormatter(_mode));
        Topology = new TopologyStore();
        Sites = new SiteWatch(Topology);
        Trace = new TraceSink(options, _mode, Output);
        _stateLog = options.Log && !options.Quiet ? new StateLog(_mode, Output) : null;
        Topology.Changed += OnTopologyChanged;
        _builder = new TopologyBuilder(new BackendTransportFactory(parts.BackendTls, parts.Connect, settings.EnvironmentProxy), time);
        Shortage = new LocalShortage(time);
        Shortage.Met += (site, error, more) => _stateLog?.OnShortage(site, error, more, time.GetUtcNow());
        Prober = new HealthProber(
            new HealthProberOptions(options.HealthDuration, options.HealthTimeout, options.HealthOptimistic),
            Topology, time, seams.Random ?? new Random(), Shortage);
        Prober.ProbeCompleted += Trace.OnProbe;

        // No host defaults: sidekick is configured by its flags and SIDEKICK_* variables only. The default
        // builders read appsettings*.json and ASPNETCORE_*/DOTNET_* settings and watch the working directory
        // recursively for changes (one inotify watch per subdirectory; ~60 ms of start-up from a checkout
        // with node_modules), none of which a sidecar wants.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { Args = [] });
        builder.WebHost.UseKestrelCore();
        builder.Services.AddHttpForwarder();
        var loops = settings.EventLoops ? EventLoops.SharedWith(settings.IoThreads) : null;
        if (loops is not null)
        {
            // Client connections on sidekick's event loops (see Networking/): no speculative receives, and
            // requests are parsed and forwarded on the thread that saw them arrive.
            builder.Services.AddSingleton<IConnectionListenerFactory>(services =>
                new LoopTransportFactory(services.GetRequiredService<IMemoryPoolFactory<byte>>(), _binds.Attempt, Shortage, time));
        }
        else
        {
            // Kestrel's socket connections, accepted with backoff when the process is short of descriptors.
            builder.Services.AddSingleton<IConnectionListenerFactory>(services =>
                new DotnetTransportFactory(services.GetRequiredService<IMemoryPoolFactory<byte>>(), _binds.Attempt, Shortage, time));
        }

        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
        Compactor = seams.Compactor ?? HeapCompactor.Shared;
        // Parsed here, not when Kestrel reads its options, so that a bad value is a usage error at once. With
        // --admin-address, --pprof's routes are served there and --pprof's own address is not bound.
        _admin = options.AdminAddress is { Length: > 0 } admin ? SideListener.Admin(admin) : null;
        _diagnostics = _admin is null && options.Pprof is { Length: > 0 } pprof ? SideListener.Diagnostics(pprof) : null;
        TrustedProxies.Current = TrustedProxies.Parse(options.TrustedProxies);
        if (options.ClientSendTimeout > TimeSpan.Zero)
        {
            _sendTimeout = new ClientSendTimeout(options.ClientSendTimeout, time);
            _sendTimeout.Cut += (client, timeout) => _stateLog?.OnClientSendTimeout(client, timeout, time.GetUtcNow());
        }

        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // Values above 0x7F from backends are written back as Latin-1, their bytes unchanged (Latin1Fields).
            kestrel.ResponseHeaderEncodingSelector = Latin1Fields.Selector;
            // A proxy for object storage: no body size cap and no minimum response rate (slow readers of huge
            // objects are legitimate, and backpressure bounds what they hold). A request body that trickles
            // in slower than the minimum rate (Kestrel's 240 B/s by default) holds a backend exchange open
            // for nothing, and is cut.
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.Limits.MinRequestBodyDataRate = options.ClientMinBodyRate > 0
                ? new MinDataRate(options.ClientMinBodyRate, TimeSpan.FromSeconds(5))
                : null;
            kestrel.Limits.MinResponseDataRate = null;
            var maxConnections = options.MaxConnectionsSet ? options.MaxConnections : DescriptorLimit.DefaultConnections();
            kestrel.Limits.MaxConcurrentConnections = maxConnections;
            kestrel.Limits.MaxConcurrentUpgradedConnections = maxConnections;
            kestrel.Limits.MaxRequestHeadersTotalSize = options.MaxHeaderBytes;
            kestrel.Limits.MaxRequestLineSize = options.MaxRequestLineBytes;
            kestrel.Limits.KeepAliveTimeout = options.ClientIdleTimeout;
            kestrel.Limits.RequestHeadersTimeout = options.ClientHeaderTimeout;
            var address = ListenAddress.Parse(options.Address);
            _listenAddress = address;
            void Configure(ListenOptions listen)
            {
                listen.Use(Compactor.Track);
                listen.Use(FirstByteTimeout.Create(options.ClientHeaderTimeout, time));
                if (_sendTimeout is { } sendTimeout)
                {
                    listen.Use(sendTimeout.Install);
                }

                if (parts.ConfigureTls is { } tls)
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    tls(listen);
                }
                else
                {
                    listen.Protocols = HttpProtocols.Http1;
                }

                listen.Use(BatchedSends.ByProtocol);
            }

            if (address.BindAddress is { } ip)
            {
                kestrel.Listen(ip, address.Port, Configure);
            }
            else
            {
                kestrel.ListenAnyIP(address.Port, Configure);
            }

            _admin?.Bind(kestrel, options.ClientHeaderTimeout, time);
            _diagnostics?.Bind(kestrel, options.ClientHeaderTimeout, time);
        });

        _app = builder.Build();
        _forwarder = new Http1Forwarder(
            _app.Services.GetRequiredService<IHttpForwarder>(),
            parts.ResolveBackend,
            loops,
            BackendLimits.ConnectTimeout,
            BackendLimits.IdleConnectionTimeout,
            settings.Http1PathOff,
            time);
        Retries = new RetryPolicy(options.MaxAttempts, options.MaxReplayBytes, new RetryBudget(options.RetryBudgetRatio, options.RetryBudgetMinPerSecond, time), seams.ReplayBudgetBytes);
        Outliers = new OutlierDetector(
            new OutlierOptions(options.OutlierConsecutiveErrors, options.OutlierEjectionTime, options.OutlierMaxEjectionTime, options.OutlierMaxEjectionPercent),
            Topology);
        Outliers.Ejected += (_, _) => Interlocked.Increment(ref _ejections);
        if (settings.Cache is { } spooled)
        {
            Caching.SpoolFiles.RequireWritable(spooled.SpoolDirectory);
        }

        Cache = settings.Cache is { } cache ? new ResponseCache(WithNamespace(cache, options), time) : null;
        _settingsNamespace = settings.Cache?.Namespace is not null;
        if (Cache is not null)
        {
            Cache.Fills.Abandoned += (target, reason, detail) => _stateLog?.OnFillAbandoned(target, CacheMetrics.AbandonLabel(reason), detail, time.GetUtcNow());
            Cache.Fills.ContinuedWithoutClient += (target, from, length) => _stateLog?.OnFillContinued(target, from, length, time.GetUtcNow());
            Cache.Fills.HandedOffFromClient += (target, from, length) => _stateLog?.OnFillHandedOff(target, from, length, time.GetUtcNow());
            Cache.Fills.NotStoredLogged += (target, reason, detail) => _stateLog?.OnNotStored(target, CacheMetrics.NotStoredLabel(reason), detail, time.GetUtcNow());
            Cache.StoredReadBroken += (key, offset, outcome, detail) => _stateLog?.OnStoredReadBroken(key, offset, outcome, detail, time.GetUtcNow());
            Cache.FetchedTwice += target => _stateLog?.OnFetchedTwice(target, time.GetUtcNow());
            Cache.FaultyEntryEvicted += (key, detail) => _stateLog?.OnFaultyEntryEvicted(key, detail, time.GetUtcNow());
        }

        Panic = new PanicRule();
        Panic.Changed += site => _stateLog?.OnPanic(site, time.GetUtcNow());
        Waits = new BackendWait(options.WaitForBackend, options.WaitQueue, time, Prober.ProbeDownBackendsNow);
        Exchange = new BackendExchange(Cache is not null, Topology, Balancers.Create(options.HostBalance, options.SlowStart), _forwarder, Prober, Outliers,
            Retries, (long)options.FailbackHoldDown.TotalMilliseconds, Trace, time, Panic, Waits, options.BackendTimeout, Shortage);
        Proxy = new ProxyHandler(Cache, Exchange, Trace, time);
        Meter = new SidekickMeter(Topology, Sites, Retries);
        var metrics = new PrometheusExporter(
            Topology, Sites, Retries, () => Volatile.Read(ref _ejections), () => Output.Dropped, _forwarder.ForwardedFor, Cache, Panic, Waits,
            () => _sendTimeout?.Closed ?? 0, Shortage);
        var local = new LocalEndpoints(Topology, parts.CertificatePem ?? (static () => null), metrics, Cache,
            adminListener: _admin is not null, diagnostics: options.Pprof is { Length: > 0 }, Panic, Waits, time);
        var adminListener = _admin;
        var diagnosticsListener = _diagnostics;
        var sendTimeout = _sendTimeout;
        _app.Run(context =>
        {
            if (adminListener is not null && adminListener.Serves(context.Connection))
            {
                return adminListener.Admits(context.Request.Host) ? local.HandleAdminAsync(context) : SideListener.MisdirectedAsync(context);
            }

            if (diagnosticsListener is not null && diagnosticsListener.Serves(context.Connection))
            {
                return diagnosticsListener.Admits(context.Request.Host) ? DiagnosticsEndpoints.HandleAsync(context, time) : SideListener.MisdirectedAsync(context);
            }

            if (sendTimeout is not null && HttpProtocol.IsHttp2(context.Request.Protocol))
            {
                sendTimeout.WatchStream(context);
            }

            return local.TryHandle(context, out var handled) ? handled : Proxy.HandleAsync(context);
        });
    }

    public TopologyStore Topology { get; }

    /// <summary>Requests carried by the HTTP/1.1 fast path (the others went through YARP).</summary>
    public long FastPathRequests => _forwarder.Forwarded;

    /// <summary>Idle backend connections on which something arrived that the event loop has seen (for tests).</summary>
    internal int FastPathIdleWithArrivals => _forwarder.IdleWithArrivals;

    internal int FastPathIdle => _forwarder.Idle;

    /// <summary>Client connections served by sidekick's event loops (0 with the .NET socket engine).</summary>
    public long EventLoopConnections => (_app.Services.GetService<IConnectionListenerFactory>() as LoopTransportFactory)?.Accepted ?? 0;

    /// <summary>The client send timeout's watch (null when --client-send-timeout is 0), for tests.</summary>
    internal ClientSendTimeout? SendTimeout => _sendTimeout;

    public HealthProber Prober { get; }

    /// <summary>Sockets the process could not have (out of descriptors or socket memory), by where.</summary>
    public LocalShortage Shortage { get; }

    public ProxyHandler Proxy { get; }

    /// <summary>Every request to a backend goes through it (see <see cref="BackendExchange"/>).</summary>
    public BackendExchange Exchange { get; }

    public RetryPolicy Retries { get; }

    public OutlierDetector Outliers { get; }

    /// <summary>Whether requests are going to passively marked backends because nothing else serves.</summary>
    public PanicRule Panic { get; }

    /// <summary>Requests waiting for a backend because nothing serves.</summary>
    public BackendWait Waits { get; }

    public TraceSink Trace { get; }

    public ResponseCache? Cache { get; }

    public OutputQueue Output { get; }

    public SiteWatch Sites { get; }

    public SidekickMeter Meter { get; }

    /// <summary>sidekick's own lines, as text or (--json) JSON.</summary>
    public ConsoleLines Lines { get; }

    /// <summary>Compacts the heap after bursts of closed client connections (one per process: the heap is).</summary>
    public HeapCompactor Compactor { get; }

    private ListenAddress? _listenAddress;
    private readonly SideListener? _admin;
    private readonly SideListener? _diagnostics;
    private readonly ListenFailure _binds = new();
    private readonly ClientSendTimeout? _sendTimeout;

    /// <summary>The admin listener's address (<c>--admin-address</c>), e.g. <c>http://127.0.0.1:9091</c>; null without one. Known after start.</summary>
    public Uri? AdminAddress => _admin?.BoundEndPoint is { } bound ? new Uri($"http://{bound}") : null;

    /// <summary>The addresses Kestrel bound, e.g. <c>http://127.0.0.1:41234</c> (known after start).</summary>
    public IReadOnlyCollection<string> Addresses =>
        _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.ToArray() ?? [];

    /// <summary>The first bound address, usable as a base URI by clients on this host.</summary>
    public Uri BaseAddress => new(Addresses.First().Replace("[::]", "127.0.0.1", StringComparison.Ordinal)
        .Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal));

    public static SidekickServer Create(
        SidekickOptions options, Func<IReadOnlyList<SiteDefinition>> loadSites, SidekickSeams? seams = null, ServerParts? parts = null) =>
        new(options, loadSites, seams ?? new SidekickSeams(), parts ?? new ServerParts());

    private void OnTopologyChanged(TopologySnapshot previous, TopologySnapshot next)
    {
        var known = new HashSet<Backend>(previous.AllBackends);
        foreach (var backend in next.AllBackends)
        {
            if (known.Add(backend))
            {
                backend.StateChanged += OnTransition;
            }
        }

        Sites.Refresh();
    }

    private void OnTransition(Backend backend, BackendTransition transition)
    {
        if (transition.IsUp)
        {
            Waits.OnBackendUp();
        }

        _stateLog?.OnTransition(backend, transition);
        Sites.Refresh();
    }

    /// <summary>
    /// The cache's settings with its namespace: SIDEKICK_CACHE_NAMESPACE, else the hash of the backends the command
    /// line names (before --rr-dns-mode resolves them, so that the addresses a name resolves to do not move it).
    /// </summary>
    private static CacheOptions WithNamespace(CacheOptions cache, SidekickOptions options) => cache.Namespace is not null
        ? cache
        : cache with { Namespace = CacheNamespace.Of(SiteParser.Parse(options.Sites, options.ProgramName, options.HealthPath, options.ReadHealthPath, options.HealthPort)) };

    /// <summary>Builds the topology, starts probing and binds the listener.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        Topology.Publish(_builder.Build(_loadSites(), Topology.Current));
        Prober.Start();
        if (_stateLog is { } log && Cache is { } cache)
        {
            cache.Health.Watch(transition => log.OnCacheTransition(cache.Health, transition));
        }

        if (Cache is { } store)
        {
            // The first requests would otherwise bypass a healthy store only because its first probe had not answered.
            await Task.WhenAny(store.Health.FirstProbe, Task.Delay(CacheHealth.FirstProbeWait, _time, cancellationToken));
        }

        // Before the first request can start a fill, and before the free space is judged: what a killed sidekick left in
        // the spool is that space.
        if (Cache?.Fills is { } spool && spool.RemoveLeftoverSpoolFiles() is { Files: > 0 } removed && _mode.ConsoleDisplay)
        {
            await _stdout.WriteLineAsync(Lines.Info(
                $"removed {removed.Files} spool {(removed.Files == 1 ? "file" : "files")} ({removed.Bytes} bytes) that a sidekick which stopped without " +
                $"closing them left in '{spool.SpoolDirectory}'",
                ("SpoolDir", spool.SpoolDirectory), ("Files", removed.Files), ("Bytes", removed.Bytes)));
        }

        var lifetime = _app.Services.GetRequiredService<IHostApplicationLifetime>();
        lifetime.ApplicationStopping.Register(() => _drain ??= Task.Run(() => WatchDrainAsync(_time)));
        try
        {
            await _app.StartAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is IOException or SocketException)
        {
            throw RefusedBind(ex);
        }

        // Before the listening line: whoever waits for it and then signals must find the handlers in place.
        if (!OperatingSystem.IsWindows())
        {
            _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGHUP, signal =>
            {
                signal.Cancel = true;
                _ = Task.Run(ReloadOnSignal);
            }));
            _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGTERM, signal => Drain(signal, "terminated")));
            _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, signal => Drain(signal, "interrupt")));
        }

        if (Cache?.Fills is { SpoolDiskFree: { } free } fills && free < fills.SpoolCapacity)
        {
            // Each fill is refused when the disk lacks the room (spool_full), so this is no failure; said once here
            // so that an operator learns it before the first large object goes uncached.
            _stderr.WriteLine(Lines.Error(
                $"cache spool '{fills.SpoolDirectory}' has {free} bytes free on its file system, less than SIDEKICK_CACHE_SPOOL_SIZE " +
                $"({fills.SpoolCapacity}): bodies larger than the free space are not cached (spool_full); free space there, or set " +
                "SIDEKICK_CACHE_SPOOL_DIR to a larger disk or SIDEKICK_CACHE_SPOOL_SIZE to what it holds",
                ("SpoolDir", fills.SpoolDirectory), ("SpoolDiskFree", free), ("SpoolSize", fills.SpoolCapacity)));
        }

        if (_mode.ConsoleDisplay)
        {
            if (Cache is { } shared)
            {
                // Which sidecars share entries: those with this folder in this bucket (docs/cache.md, "Sidecars sharing a bucket").
                var named = _settingsNamespace ? "SIDEKICK_CACHE_NAMESPACE" : "a hash of the backends; SIDEKICK_CACHE_NAMESPACE names it";
                await _stdout.WriteLineAsync(Lines.Info(
                    $"cache in bucket '{shared.Health.Bucket}' of {SecretRedaction.Url(shared.Health.Endpoint)}, entries in folder '{shared.Namespace}' ({named})",
                    ("Bucket", shared.Health.Bucket), ("Namespace", shared.Namespace)));
            }

            await _stdout.WriteLineAsync(Lines.Info($"listening on '{_options.Address}'", ("Address", _options.Address)));
            if (_admin is { } admin)
            {
                var where = admin.BoundEndPoint?.ToString() ?? admin.Value;
                var what = _options.Pprof is { Length: > 0 } ? "state, metrics, certificates, diagnostics" : "state, metrics, certificates";
                await _stdout.WriteLineAsync(Lines.Info($"admin endpoints ({what}) on '{where}'", ("AdminAddress", where)));
            }
        }
        else
        {
            _table = Task.Run(() => new StatusTable(Topology, TimeProvider.System).RunAsync(_stdout, _stopping.Token), CancellationToken.None)
                .ContinueWith(static _ => { }, TaskScheduler.Default);
        }
    }

    /// <summary>
    /// SIGTERM, SIGINT: say what is draining (upstream printed the signal), then stop gracefully. A second one
    /// during the drain stops at once: an operator pressing Ctrl-C again, or an orchestrator's second signal,
    /// should not need SIGKILL to end a drain that a stuck request would hold for the whole --shutdown-timeout.
    /// </summary>
    private void Drain(PosixSignalContext signal, string name)
    {
        signal.Cancel = true;
        var inFlight = Topology.Current.AllBackends.Sum(static b => b.InFlight);
        if (Interlocked.Increment(ref _stopSignals) > 1)
        {
            ExitNow(name, inFlight);
            return;
        }

        Announce(Lines.Info(
            $"caught signal '{name}': stopping; {inFlight} {(inFlight == 1 ? "request" : "requests")} in flight get up to {GoDuration.Format(_options.ShutdownTimeout)} to finish",
            ("Signal", name), ("InFlight", inFlight)));
        _app.Lifetime.StopApplication();
    }

    /// <summary>
    /// The second stop signal: one line on stderr, written before anything else can block, then the process
    /// ends without running the drain's cleanup (which is what is being cut). Spool files left behind are swept
    /// by the next start; multipart uploads left open are the store's to expire, as after any kill.
    /// </summary>
    private void ExitNow(string name, int inFlight)
    {
        try
        {
            _stderr.WriteLine(Lines.Error(
                $"caught signal '{name}' again: exiting now, without waiting for {inFlight} {(inFlight == 1 ? "request" : "requests")} in flight",
                ("Signal", name), ("InFlight", inFlight)));
            _stderr.Flush();
        }
        finally
        {
            Libc._exit(SidekickApp.ShutdownCutExitCode);
        }
    }

    /// <summary>SIGHUP: reload, then one line saying what changed (or why nothing did).</summary>
    private void ReloadOnSignal()
    {
        lock (_reloadGate)
        {
            var before = Topology.Current;
            if (TryReload() is { } error)
            {
                _stderr.WriteLine(Lines.Error($"caught signal 'hangup': reload failed, keeping the current sites: {error}", ("Signal", "hangup")));
                return;
            }

            var after = Topology.Current;
            var previous = before.AllBackends.ToHashSet();
            var current = after.AllBackends.ToHashSet();
            var added = current.Count(b => !previous.Contains(b));
            var removed = previous.Count(b => !current.Contains(b));
            Announce(Lines.Info(
                $"caught signal 'hangup': reloaded the SITEs: {after.Sites.Length} {(after.Sites.Length == 1 ? "site" : "sites")}, " +
                $"{current.Count} {(current.Count == 1 ? "backend" : "backends")} ({added} added, {removed} removed, the others keep their state)",
                ("Signal", "hangup"), ("Sites", after.Sites.Length), ("Backends", current.Count), ("Added", added), ("Removed", removed)));
        }
    }

    /// <summary>A line about the whole process: printed with the log and trace lines, never in the table's place.</summary>
    private void Announce(string line)
    {
        if (_mode.ConsoleDisplay)
        {
            Output.Enqueue(line);
        }
    }

    /// <summary>One line naming the listener that could not bind, its value and what would work.</summary>
    private FatalException RefusedBind(Exception ex)
    {
        var endpoint = _binds.Last as IPEndPoint;
        var side = endpoint is null || SideListener.ListensOn(_listenAddress, endpoint) ? null
            : new[] { _admin, _diagnostics }.FirstOrDefault(l => l is not null && l.Tried(endpoint));
        var (flag, value) = side is not null ? (side.Flag, side.Value) : ("--address", _options.Address);
        var reason = ListenFailure.ErrorOf(ex) is { } error ? ListenFailure.Reason(error, endpoint, ex.Message) : ex.Message;
        return new FatalException($"unable to listen on \"{value}\" ({flag}): {reason}", ex);
    }

    /// <summary>
    /// Re-reads the SITE arguments (re-expanding and re-resolving) and swaps the topology. Unchanged
    /// backends keep their state, so there is no window of 502s.
    /// </summary>
    public void Reload()
    {
        if (TryReload() is { } error)
        {
            _stderr.WriteLine(Lines.Error($"reload failed, keeping the current sites: {error}"));
        }
    }

    /// <summary>Swaps in the SITEs as they read now; null when done, else why the running topology was kept.</summary>
    private string? TryReload()
    {
        lock (_reloadGate)
        {
            try
            {
                Topology.Publish(_builder.Build(_loadSites(), Topology.Current));
                return null;
            }
            catch (FatalException ex)
            {
                return ex.Message;
            }
        }
    }

    /// <summary>Requests being forwarded or waiting for a backend, across every backend.</summary>
    public int RequestsInFlight
    {
        get
        {
            var count = Waits.Waiting;
            foreach (var backend in Topology.Current.AllBackends)
            {
                count += backend.InFlight;
            }

            return count;
        }
    }

    /// <summary>
    /// After a stop: how many requests the shutdown timeout cut (0 when every one finished in time). Watches
    /// the drain from the moment stopping began: requests still running when the timeout ended were aborted.
    /// </summary>
    public Task<int> RequestsCutAtShutdownAsync() => _drain ?? Task.FromResult(0);

    private Task<int>? _drain;

    private async Task<int> WatchDrainAsync(TimeProvider time)
    {
        var started = time.GetTimestamp();
        var lastSeen = 0;
        for (var running = RequestsInFlight; running > 0; running = RequestsInFlight)
        {
            if (time.GetElapsedTime(started) >= _options.ShutdownTimeout)
            {
                return running;
            }

            lastSeen = running;
            await Task.Delay(TimeSpan.FromMilliseconds(20), time);
        }

        // Drained: in time, or because the timeout aborted what was left (then they were cut).
        return time.GetElapsedTime(started) >= _options.ShutdownTimeout ? lastSeen : 0;
    }

    /// <summary>Waits until the host stops (SIGTERM, SIGINT or <see cref="StopAsync"/>).</summary>
    public Task WaitForShutdownAsync() => _app.WaitForShutdownAsync();

    /// <summary>Stops accepting, lets in-flight requests finish within the shutdown timeout, then stops.</summary>
    public Task StopAsync() => _app.StopAsync();

    public async ValueTask DisposeAsync()
    {
        foreach (var signal in _signals)
        {
            signal.Dispose();
        }

        await _stopping.CancelAsync();
        await _table;
        Prober.Dispose();
        Meter.Dispose();
        Cache?.Dispose();
        await Output.DisposeAsync();
        await _app.DisposeAsync();
        _forwarder.Dispose();
        _sendTimeout?.Dispose();
        foreach (var site in Topology.Current.Sites)
        {
            site.Invoker.Dispose();
        }
    }
}

/// <summary>
/// What <see cref="SidekickApp"/> built for the server from the options: TLS on the listener and to backends,
/// the DNS cache's connect and resolve, and the settings it read from the environment (read from the process,
/// with <see cref="SidekickSeams.Environment"/> over it, when null).
/// </summary>
internal sealed record ServerParts
{
    public RuntimeSettings? Settings { get; init; }
    public Action<ListenOptions>? ConfigureTls { get; init; }
    public Func<string?>? CertificatePem { get; init; }
    public Func<string, System.Net.Security.SslClientAuthenticationOptions>? BackendTls { get; init; }
    public Func<SocketsHttpConnectionContext, CancellationToken, ValueTask<Stream>>? Connect { get; init; }
    public BackendResolve? ResolveBackend { get; init; }
}
