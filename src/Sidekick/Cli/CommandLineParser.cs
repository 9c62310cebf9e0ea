using System.Globalization;
using Sidekick.Routing;

namespace Sidekick.Cli;

/// <summary>What the command line asks for.</summary>
internal abstract record CommandLineResult
{
    private CommandLineResult()
    {
    }

    public sealed record Run(SidekickOptions Options) : CommandLineResult;

    public sealed record ShowText(string Text) : CommandLineResult;
}

/// <summary>
/// Parses the command line with Go <c>flag</c> semantics, as the Go sidekick does: <c>-name</c> equals
/// <c>--name</c>; values as <c>--name value</c> or <c>--name=value</c>; booleans only as <c>--name</c> or
/// <c>--name=true|false</c>; parsing stops at the first positional argument or after <c>--</c>.
/// </summary>
internal static class CommandLineParser
{
    public static CommandLineResult Parse(string programName, IReadOnlyList<string> args)
    {
        var options = new SidekickOptions { ProgramName = programName };
        var seen = new Dictionary<FlagDefinition, string>();
        bool help = false, version = false;
        var index = 0;
        for (; index < args.Count; index++)
        {
            var arg = args[index];
            if (arg == "--")
            {
                index++;
                break;
            }

            if (arg.Length < 2 || arg[0] != '-' || (arg.Length == 2 && arg[1] == '-'))
            {
                break; // the first positional argument: everything from here on is a SITE
            }

            var body = arg[1] == '-' ? arg[2..] : arg[1..];
            if (body.Length == 0 || body[0] == '-' || body[0] == '=')
            {
                throw new UsageException($"bad flag syntax: {arg}");
            }

            var equals = body.IndexOf('=', StringComparison.Ordinal);
            var name = equals < 0 ? body : body[..equals];
            var flag = Flags.Find(name) ?? throw new UsageException($"flag provided but not defined: -{name}");
            if (seen.TryGetValue(flag, out var usedName) && usedName != name)
            {
                throw new UsageException($"cannot use two forms of the same flag: -{usedName} and -{name}");
            }

            seen[flag] = name;
            string text;
            if (flag.Kind == FlagKind.Bool)
            {
                text = equals < 0 ? "true" : body[(equals + 1)..];
            }
            else if (equals >= 0)
            {
                text = body[(equals + 1)..];
            }
            else if (index + 1 < args.Count)
            {
                text = args[++index];
            }
            else
            {
                throw new UsageException($"flag needs an argument: -{name}");
            }

            var value = ReadValue(flag, name, text);
            help |= flag.Names[0] == "help" && value.Bool;
            version |= flag.Names[0] == "version" && value.Bool;
            try
            {
                options = flag.Apply(options, value);
            }
            catch (OverflowException)
            {
                // A 64-bit value (as Go's flags read it) for a setting that holds 32 bits: cut to them, it was another
                // number (--health-port 4294985796 probed port 18500).
                throw new UsageException($"invalid value \"{text}\" for flag -{name}: out of range");
            }
        }

        if (help)
        {
            return new CommandLineResult.ShowText(HelpText.Render(programName));
        }

        if (version)
        {
            return new CommandLineResult.ShowText($"{programName} version {Version}");
        }

        var sites = args.Skip(index).ToArray();
        if (sites.Length == 0)
        {
            throw new UsageException("no SITE given: sidekick [FLAGS] SITE1 [SITE2..], e.g. sidekick --health-path=/minio/health/ready http://minio{1...4}:9000");
        }

        return new CommandLineResult.Run(Validate(options with { Sites = sites }));
    }

    /// <summary>The version stamped at build time (<c>-p:Version=…</c>), without the commit suffix.</summary>
    public static string Version => Observability.BuildInfo.Current.Version;

    private static FlagValue ReadValue(FlagDefinition flag, string name, string text)
    {
        switch (flag.Kind)
        {
            case FlagKind.Bool:
                return text switch
                {
                    "1" or "t" or "T" or "true" or "TRUE" or "True" => new FlagValue(text, Bool: true),
                    "0" or "f" or "F" or "false" or "FALSE" or "False" => new FlagValue(text, Bool: false),
                    _ => throw new UsageException($"invalid boolean value \"{text}\" for -{name}: use true or false"),
                };
            case FlagKind.Int:
                return TryParseGoInt(text, out var number)
                    ? new FlagValue(text, Int: number)
                    : throw new UsageException($"invalid value \"{text}\" for flag -{name}: expected an integer");
            case FlagKind.Duration:
                return GoDuration.TryParse(text, out var duration)
                    ? new FlagValue(text, Duration: GoDuration.ForTimers(duration))
                    : throw new UsageException($"invalid value \"{text}\" for flag -{name}: expected a duration such as 5s, 250ms or 1m30s");
            case FlagKind.Bytes:
                return ByteSize.TryParse(text, out var bytes)
                    ? new FlagValue(text, Int: bytes)
                    : throw new UsageException($"invalid value \"{text}\" for flag -{name}: expected a size such as 1MiB or 64KB");
            case FlagKind.IntList:
                var codes = new List<int>();
                foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
                {
                    if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var code) || code is < 100 or > 999)
                    {
                        throw new UsageException($"invalid value \"{text}\" for flag -{name}: expected HTTP status codes such as 500 or 500,502");
                    }

                    codes.Add(code);
                }

                return new FlagValue(text, Ints: codes);
            default:
                return new FlagValue(text);
        }
    }

    /// <summary>Go integer literal syntax: optional sign, 0x/0o/0b prefixes, leading-zero octal, underscores.</summary>
    private static bool TryParseGoInt(string text, out long value)
    {
        value = 0;
        var s = text.Replace("_", "", StringComparison.Ordinal);
        var negative = s.StartsWith('-');
        if (negative || s.StartsWith('+'))
        {
            s = s[1..];
        }

        var (digits, radix) = s.Length > 1 && s[0] == '0'
            ? char.ToLowerInvariant(s[1]) switch
            {
                'x' => (s[2..], 16),
                'o' => (s[2..], 8),
                'b' => (s[2..], 2),
                _ => (s[1..], 8),
            }
            : (s, 10);
        if (digits.Length == 0)
        {
            return false;
        }

        try
        {
            value = Convert.ToInt64(digits, radix);
        }
        catch (Exception ex) when (ex is FormatException or OverflowException or ArgumentException)
        {
            return false;
        }

        value = negative ? -value : value;
        return true;
    }

    private static SidekickOptions Validate(SidekickOptions o)
    {
        if (o.HealthPort is < 0 or > 65535)
        {
            throw new UsageException($"invalid health check port \"{o.HealthPort}\": must be in [0, 65535]");
        }

        RequirePositive(o.HealthDuration, "health-duration", "5s");
        RequirePositive(o.HealthTimeout, "health-timeout", "10s");
        RequirePositive(o.DnsTtl, "dns-ttl", "10m");
        RequirePositive(o.ShutdownTimeout, "shutdown-timeout", "30s");
        RequirePositive(o.ClientIdleTimeout, "client-idle-timeout", "2m");
        RequirePositive(o.ClientHeaderTimeout, "client-header-timeout", "30s");
        if (o.OutlierEjectionTime < TimeSpan.Zero || o.SlowStart < TimeSpan.Zero || o.FailbackHoldDown < TimeSpan.Zero)
        {
            throw new UsageException("--outlier-ejection, --slow-start and --failback-hold must not be negative");
        }

        if (o.WaitForBackend < TimeSpan.Zero)
        {
            throw new UsageException($"invalid --wait-for-backend \"{GoDuration.Format(o.WaitForBackend)}\": must not be negative, e.g. 3s (0 = fail at once)");
        }

        if (o.BackendTimeout < TimeSpan.Zero)
        {
            throw new UsageException($"invalid --backend-timeout \"{GoDuration.Format(o.BackendTimeout)}\": must not be negative, e.g. 5m (0 = no limit)");
        }

        _ = Forwarding.TrustedProxies.Parse(o.TrustedProxies);
        if (o.ClientSendTimeout < TimeSpan.Zero)
        {
            throw new UsageException($"invalid --client-send-timeout \"{GoDuration.Format(o.ClientSendTimeout)}\": must not be negative, e.g. 5m (0 = no limit)");
        }

        if (o.WaitQueue < 0)
        {
            throw new UsageException($"invalid --wait-queue \"{o.WaitQueue}\": must not be negative, e.g. 1024 (0 = never wait)");
        }

        var balance = o.HostBalance.Length == 0 ? "least" : o.HostBalance;
        if (Array.IndexOf(Balancers.Names, balance) < 0)
        {
            throw new UsageException($"invalid --host-balance \"{o.HostBalance}\": supported values are 'least', 'random'");
        }

        var warnings = new List<string>(o.Warnings);
        if (o.Trace is not ("all" or "application" or "minio" or ""))
        {
            // Upstream accepts any value and traces everything; `-t -l` even takes "-l" as the value (so --log is
            // not set). Keep that, but say so: the operator most likely meant something else.
            var flagHint = o.Trace.StartsWith('-') ? $" (--trace takes the next argument as its value, so {o.Trace} was not read as a flag)" : "";
            warnings.Add($"--trace \"{o.Trace}\" is not one of [all,application,minio] (or \"\" to print none); tracing all{flagHint}");
            o = o with { Trace = "all" };
        }

        if (o.TlsMax is not ("1.2" or "1.3"))
        {
            throw new UsageException($"invalid TLS max version specified '{o.TlsMax}' - supported values [1.2, 1.3]");
        }

        if (!string.IsNullOrEmpty(o.KeyPassword) && !string.IsNullOrEmpty(o.KeyPasswordFile))
        {
            throw new UsageException("--key-password and --key-password-file are both set: give the password one way (the file keeps it out of the process list)");
        }

        if (o.MaxAttempts < 1)
        {
            throw new UsageException($"invalid --max-attempts \"{o.MaxAttempts}\": must be at least 1 (1 = no retries)");
        }

        if (o.OutlierMaxEjectionPercent is < 0 or > 100 || o.RetryBudgetRatio < 0)
        {
            throw new UsageException("--outlier-max-percent must be in [0, 100] and --retry-budget must not be negative");
        }

        if (o.MaxHeaderBytes < 1024 || o.MaxConnections < 0)
        {
            throw new UsageException("--max-header-size must be at least 1KiB and --max-connections must not be negative");
        }

        // Upstream: a leading '/' is added; an empty read path means the health path.
        var healthPath = Normalize(o.HealthPath);
        var readPath = o.ReadHealthPath.Length == 0 ? healthPath : Normalize(o.ReadHealthPath);
        return o with { HealthPath = healthPath, ReadHealthPath = readPath, HostBalance = balance, Warnings = warnings };
    }

    private static void RequirePositive(TimeSpan value, string flag, string example)
    {
        if (value <= TimeSpan.Zero)
        {
            throw new UsageException($"invalid --{flag} \"{GoDuration.Format(value)}\": must be greater than 0, e.g. {example}");
        }
    }

    private static string Normalize(string path) => path.StartsWith('/') ? path : "/" + path;
}
