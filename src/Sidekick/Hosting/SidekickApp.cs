using Sidekick.Cli;
using Sidekick.Observability;
using Sidekick.Security;
using Sidekick.Topology;
using Sidekick.Topology.Dns;
using Sidekick.Platform;

namespace Sidekick.Hosting;

/// <summary>
/// The process: parse the command line, validate the SITEs, set up TLS and DNS, run the server until
/// SIGTERM/SIGINT. User mistakes are one line on stderr (exit 2 for usage, 1 for configurations that cannot start).
/// </summary>
internal static class SidekickApp
{
    /// <summary>Exit code when --shutdown-timeout cut requests that were still running.</summary>
    public const int ShutdownCutExitCode = 3;

    /// <param name="stdoutStream">The byte stream under <paramref name="stdout"/>, for the trace and log lines (see <see cref="SidekickSeams.StdoutStream"/>).</param>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, Stream? stdoutStream = null)
    {
        var programName = ProgramName;
        SidekickOptions? options = null;
        var started = false;
        try
        {
            var parsed = CommandLineParser.Parse(programName, args);
            if (parsed is CommandLineResult.ShowText show)
            {
                await stdout.WriteLineAsync(show.Text.TrimEnd('\n'));
                return 0;
            }

            options = ((CommandLineResult.Run)parsed).Options;
            await using var app = Create(options, new SidekickSeams { Stdout = stdout, Stderr = stderr, StdoutStream = stdoutStream });
            await app.Server.StartAsync();
            started = true;
            // Start-up code (flags, host, listener) will not run again: let its pages leave the resident set.
            CodePages.Release();
            await app.Server.WaitForShutdownAsync();
            if (await app.Server.RequestsCutAtShutdownAsync() is var cut and > 0)
            {
                // An orchestrator should know that a stop lost work: a clean drain exits 0, a cut one does not.
                await stderr.WriteLineAsync(ErrorLine(options, programName,
                    $"--shutdown-timeout ({GoDuration.Format(options.ShutdownTimeout)}) ended with {cut} request(s) still running; they were cut"));
                return ShutdownCutExitCode;
            }

            return 0;
        }
        catch (UsageException ex)
        {
            await stderr.WriteLineAsync(ErrorLine(options, programName, $"{ex.Message} (see '{programName} --help')"));
            return 2;
        }
        catch (FatalException ex)
        {
            await stderr.WriteLineAsync(ErrorLine(options, programName, ex.Message));
            return 1;
        }
        catch (Exception ex)
        {
            // What no check foresaw (an inotify limit, a file that vanished while being read) is still one line
            // with the exception's type; --debug adds the stack trace for a bug report.
            await stderr.WriteLineAsync(ErrorLine(options, programName, $"{(started ? "stopped" : "unable to start")}: {ex.Message} ({ex.GetType().Name})"));
            if (options?.Debug == true)
            {
                await stderr.WriteLineAsync(ex.ToString());
            }

            return 1;
        }
    }

    /// <summary>
    /// A failure as one line: JSON once the command line asked for it (a mistake found while reading the command
    /// line comes before --json is known, and is always text).
    /// </summary>
    private static string ErrorLine(SidekickOptions? options, string programName, string message) =>
        new ConsoleLines(options?.Json == true, programName, TimeProvider.System).Error(message);

    /// <summary>Builds a running configuration from validated options: TLS, DNS and the server.</summary>
    public static SidekickInstance Create(SidekickOptions options, SidekickSeams? seams = null)
    {
        seams ??= new SidekickSeams();
        var stdout = seams.Stdout ?? Console.Out;
        var stderr = seams.Stderr ?? Console.Error;
        var time = seams.Time ?? TimeProvider.System;
        var resolver = seams.Resolver ?? SystemHostResolver.Instance;

        // Every start-up warning (the command line's, then the SITEs') is one line on stderr, in the format --json
        // chose, printed once: reloads parse the same SITEs again.
        var lines = new ConsoleLines(options.Json, options.ProgramName, time);
        WarnAll(options.Warnings);

        // Validate the SITEs before anything binds, so a typo fails fast with one line.
        var siteWarnings = new List<string>();
        var parsed = SiteParser.Parse(options.Sites, options.ProgramName, options.HealthPath, options.ReadHealthPath, options.HealthPort, siteWarnings);
        WarnAll(siteWarnings);
        // Beside the start rather than on its path (reading the interfaces takes milliseconds), and long before a first
        // client could meet a shortage of descriptors: see ClientAddress.HostAddress.
        _ = Task.Run(Forwarding.ClientAddress.Prime);
        var settings = RuntimeSettings.From(RuntimeSettings.ProcessEnvironment(seams.Environment));
        options = options with { KeyPassword = KeyPassword.Resolve(options, settings.KeyPassword) };
        var tls = ServerTls.Create(options, stdout, stderr, time);
        var backendTls = parsed.Any(s => s.Backends.Any(b => b.Endpoint.Scheme == Uri.UriSchemeHttps)) ? BackendTls.Load(options) : null;
        var dns = new DnsCache(resolver, options.DnsTtl, time);
        var lookupFailed = false;

        void WarnAll(IEnumerable<string> warnings)
        {
            foreach (var warning in warnings)
            {
                stderr.WriteLine(lines.Warning(warning));
            }
        }

        IReadOnlyList<SiteDefinition> LoadSites()
        {
            var sites = SiteParser.Parse(options.Sites, options.ProgramName, options.HealthPath, options.ReadHealthPath, options.HealthPort);
            if (!options.RoundRobinDns)
            {
                return sites;
            }

            var failed = false;
            var expanded = sites.Select(site => RoundRobinDns.ExpandAsync(site, resolver, error =>
            {
                failed = true;
                stderr.WriteLine(lines.Error(error));
            }).GetAwaiter().GetResult()).ToArray();
            lookupFailed = failed;
            return expanded;
        }

        if (options.RoundRobinDns)
        {
            foreach (var site in parsed.Where(s => s.Backends.Count == 1))
            {
                stdout.WriteLine(lines.Info($"RR DNS mode enabled, using {site.Backends[0].EndpointText} as hostname", ("Hostname", site.Backends[0].EndpointText)));
            }
        }

        var server = SidekickServer.Create(options, LoadSites, seams, new ServerParts
        {
            Settings = settings,
            ConfigureTls = tls is null ? null : listen => listen.UseHttps(tls.Configure),
            CertificatePem = () => tls?.CertificatePem,
            BackendTls = backendTls is null ? null : backendTls.Create,
            Connect = dns.ConnectAsync,
            ResolveBackend = dns.ResolveAsync,
        });

        // Round-robin DNS follows record changes every --dns-ttl; a name that did not resolve is retried sooner.
        ITimer? refresh = null;
        if (options.RoundRobinDns)
        {
            var retry = options.DnsTtl < TimeSpan.FromSeconds(5) ? options.DnsTtl : TimeSpan.FromSeconds(5);
            var last = time.GetTimestamp();
            refresh = time.CreateTimer(_ =>
            {
                if (time.GetElapsedTime(last) >= (lookupFailed ? retry : options.DnsTtl))
                {
                    last = time.GetTimestamp();
                    server.Reload();
                }
            }, null, retry, retry);
        }

        return new SidekickInstance(server, [tls, dns, refresh]);
    }

    /// <summary>argv[0]'s file name, as upstream prints it; "sidekick" when run through the dotnet host.</summary>
    private static string ProgramName
    {
        get
        {
            var path = System.Environment.ProcessPath;
            var name = path is null ? "sidekick" : Path.GetFileNameWithoutExtension(path);
            return name is "dotnet" or "" ? "sidekick" : name;
        }
    }
}

/// <summary>A server and what it depends on (certificate watcher, DNS cache, timers), disposed together.</summary>
internal sealed class SidekickInstance(SidekickServer server, IDisposable?[] resources) : IAsyncDisposable
{
    public SidekickServer Server { get; } = server;

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        foreach (var resource in resources)
        {
            resource?.Dispose();
        }
    }
}

/// <summary>
/// The seams for running sidekick in-process (tests, the demo): where output goes, whether it is a terminal,
/// the clock, randomness, name resolution, the heap compactor, and environment variables laid over the
/// process's (they become the <see cref="RuntimeSettings"/>).
/// </summary>
internal sealed record SidekickSeams
{
    public TextWriter? Stdout { get; init; }
    /// <summary>
    /// The byte stream under <see cref="Stdout"/> (the process's console, from Program): the output queue writes its
    /// batches of lines straight to it, one write each, when Stdout encodes UTF-8. Null: the lines go through Stdout.
    /// </summary>
    public Stream? StdoutStream { get; init; }
    /// <summary>Where errors sidekick survives go (a failed reload); the console's stderr when null.</summary>
    public TextWriter? Stderr { get; init; }
    /// <summary>Whether stdout is a terminal (table mode); null detects it from the real console.</summary>
    public bool? StdoutIsTerminal { get; init; }
    public TimeProvider? Time { get; init; }
    public Random? Random { get; init; }
    public IHostResolver? Resolver { get; init; }
    /// <summary>Variables laid over the process environment (SIDEKICK_FORWARDER, SIDEKICK_CACHE_*, …).</summary>
    public IReadOnlyDictionary<string, string?>? Environment { get; init; }
    /// <summary>Counts this server's closed connections; null shares <see cref="HeapCompactor.Shared"/>.</summary>
    public HeapCompactor? Compactor { get; init; }
    /// <summary>The bytes all replay buffers may hold at once; null: <see cref="Forwarding.ReplayBudget.DefaultBytes"/> (or --max-replay-size when larger).</summary>
    public long? ReplayBudgetBytes { get; init; }
}
