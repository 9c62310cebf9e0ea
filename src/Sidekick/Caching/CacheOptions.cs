using System.Globalization;
using Sidekick.Cli;

namespace Sidekick.Caching;

/// <summary>
/// The shared cache's settings, from SIDEKICK_CACHE_* environment variables (names and meaning as upstream,
/// plus a few of ours). Every bad value is one line naming the variable and a valid example; the secret key
/// is never printed.
/// </summary>
internal sealed record CacheOptions
{
    public const string Prefix = "SIDEKICK_CACHE_";

    private static readonly string[] RequiredNames = ["ACCESS_KEY", "SECRET_KEY", "BUCKET"];

    public required Uri Endpoint { get; init; }
    public required string AccessKey { get; init; }
    public required string SecretKey { get; init; }
    public required string Bucket { get; init; }
    public string Region { get; init; } = "us-east-1";
    public bool PathStyle { get; init; } = true;
    /// <summary>Smallest response (Content-Length) worth caching.</summary>
    public long MinSize { get; init; } = 1024 * 1024;
    /// <summary>Largest response cached.</summary>
    public long MaxSize { get; init; } = 5L * 1024 * 1024 * 1024;
    public TimeSpan HealthInterval { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>Freshness for responses with neither explicit freshness nor Last-Modified; zero = none.</summary>
    public TimeSpan DefaultMaxAge { get; init; } = TimeSpan.Zero;
    /// <summary>Multipart part size (S3 needs at least 5 MiB for all parts but the last).</summary>
    public int PartSize { get; init; } = 5 * 1024 * 1024;
    /// <summary>Where fills spool the body for the uploader (and for requests reading a fill in flight).</summary>
    public string SpoolDirectory { get; init; } = Path.Combine(Path.GetTempPath(), "sidekick-spool");
    /// <summary>
    /// Spool space all fills in flight may use together; a fill reserves its whole length. Unset: the larger of 4 GiB
    /// and <see cref="MaxSize"/>, so that the largest object the cache takes can be filled.
    /// </summary>
    public long SpoolSize { get; init; } = 5L * 1024 * 1024 * 1024;
    /// <summary>
    /// Fills running at once; further misses are served without filling. A fill holds no part in memory (it
    /// uploads from its spool file), so this bounds the uploads the store sees, not sidekick's memory; the spool
    /// budget bounds the disk (the default 4 GiB holds 64 fills of 64 MiB).
    /// </summary>
    public int MaxFills { get; init; } = 64;
    /// <summary>
    /// Reuse an entry filled with credentials without asking the backend when it was marked public or s-maxage
    /// (RFC 9111 §3.5 allows it). Off: a backend that marks private objects public would leak them to anyone.
    /// </summary>
    public bool SharePublic { get; init; }
    /// <summary>
    /// How long a miss may wait for another sidecar's fill of the same entry (seen through its lease in the bucket)
    /// instead of fetching the object from the origin again; zero turns the leases off.
    /// </summary>
    public TimeSpan FillWait { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>A store operation on the request path taking longer than this bypasses the cache.</summary>
    public TimeSpan StoreTimeout { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>
    /// The folder of the bucket this sidecar's entries live in (SIDEKICK_CACHE_NAMESPACE). Null until the server sets
    /// the default: a hash of the backends on the command line (see <see cref="CacheNamespace"/>).
    /// </summary>
    public string? Namespace { get; init; }

    /// <summary>
    /// Whether a name can be a bucket on some S3-compatible store: S3's rules today are 3 to 63 lowercase letters,
    /// digits, '.' and '-', but legacy us-east-1 buckets may hold uppercase letters and '_' and run to 255 characters,
    /// and other stores follow those looser rules; what none of them allows ('/', '!', a space, a control character)
    /// would only fail at the first store request.
    /// </summary>
    private static bool IsPossibleBucket(string name) =>
        name.Length is >= 3 and <= 255 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_');

    /// <summary>A value as a message may quote it: control characters escaped, so the line stays one line.</summary>
    private static string Printable(string value) =>
        string.Concat(value.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()));

    /// <summary>Null when SIDEKICK_CACHE_ENDPOINT is unset or empty (the cache is off).</summary>
    public static CacheOptions? FromEnvironment(IReadOnlyDictionary<string, string?> env)
    {
        string? Get(string name) => env.TryGetValue(Prefix + name, out var value) && !string.IsNullOrWhiteSpace(value) ? value.Trim() : null;

        var endpointText = Get("ENDPOINT");
        if (endpointText is null)
        {
            return null;
        }

        // The value may carry a password or a token (user information, a query): messages show it without them.
        var shown = Observability.SecretRedaction.Address(endpointText);
        if (!Uri.TryCreate(endpointText, UriKind.Absolute, out var endpoint) || endpoint.Scheme is not ("http" or "https") || endpoint.Host.Length == 0)
        {
            throw new UsageException($"invalid {Prefix}ENDPOINT \"{shown}\": expected an http or https URL such as http://minio-cache:9000");
        }

        if (endpoint.UserInfo.Length > 0 || endpoint.Query.Length > 0 || endpoint.Fragment.Length > 0)
        {
            // The store's requests are signed with the access key; a query or user information would be ignored.
            throw new UsageException($"invalid {Prefix}ENDPOINT \"{shown}\": expected no user information, query or fragment, such as http://minio-cache:9000 (credentials go in {Prefix}ACCESS_KEY and {Prefix}SECRET_KEY)");
        }

        var missing = RequiredNames.Where(n => Get(n) is null).Select(n => Prefix + n).ToArray();
        if (missing.Length > 0)
        {
            throw new UsageException($"{string.Join(", ", missing)} must be set when {Prefix}ENDPOINT is set");
        }

        var bucket = Get("BUCKET")!;
        if (!IsPossibleBucket(bucket))
        {
            throw new UsageException($"invalid {Prefix}BUCKET \"{Printable(bucket)}\": expected the name of an existing bucket, 3 to 255 letters, digits, '.', '-' or '_' " +
                                     "(S3 today: 3 to 63 lowercase letters, digits, '.' and '-'), such as sidekick-cache");
        }

        var options = new CacheOptions { Endpoint = endpoint, AccessKey = Get("ACCESS_KEY")!, SecretKey = Get("SECRET_KEY")!, Bucket = bucket };
        if (Get("REGION") is { } region)
        {
            options = options with { Region = region };
        }

        if (Get("NAMESPACE") is { } ns)
        {
            options = options with
            {
                Namespace = CacheNamespace.IsValid(ns)
                    ? ns
                    : throw new UsageException($"invalid {Prefix}NAMESPACE \"{ns}\": expected 1 to {CacheNamespace.MaxLength} letters, digits, '-', '_' or '.' (not first), such as prod-minio"),
            };
        }

        if (Get("PATH_STYLE") is { } pathStyle)
        {
            options = options with { PathStyle = ParseBool("PATH_STYLE", pathStyle) };
        }

        if (Get("SHARE_PUBLIC") is { } sharePublic)
        {
            options = options with { SharePublic = ParseBool("SHARE_PUBLIC", sharePublic) };
        }

        if (Get("MIN_SIZE") is { } min)
        {
            options = options with { MinSize = ParseSize("MIN_SIZE", min, "64MB") };
        }

        if (Get("MAX_SIZE") is { } max)
        {
            options = options with { MaxSize = ParseSize("MAX_SIZE", max, "5GiB") };
        }

        if (Get("HEALTH_DURATION") is { } health)
        {
            options = options with { HealthInterval = ParseSeconds("HEALTH_DURATION", health, "20 or 20s") };
        }

        if (Get("DEFAULT_MAX_AGE") is { } maxAge)
        {
            options = options with { DefaultMaxAge = ParseSeconds("DEFAULT_MAX_AGE", maxAge, "300 or 5m", allowZero: true) };
        }

        if (Get("FILL_WAIT") is { } fillWait)
        {
            options = options with { FillWait = ParseSeconds("FILL_WAIT", fillWait, "10s (0 turns it off)", allowZero: true) };
        }

        if (Get("PART_SIZE") is { } part)
        {
            var size = ParseSize("PART_SIZE", part, "8MiB");
            if (size is < 5 * 1024 * 1024 or > 512L * 1024 * 1024)
            {
                throw new UsageException($"invalid {Prefix}PART_SIZE \"{part}\": must be between 5MiB and 512MiB, e.g. 8MiB");
            }

            options = options with { PartSize = (int)size };
        }

        if (Get("MAX_LAG") is not null)
        {
            // Fills no longer race the client: they spool to disk. A setting that would do nothing is refused.
            throw new UsageException($"{Prefix}MAX_LAG is no longer used: fills spool to {Prefix}SPOOL_DIR within {Prefix}SPOOL_SIZE (e.g. 4GiB) instead");
        }

        if (Get("SPOOL_DIR") is { } spoolDirectory)
        {
            options = options with { SpoolDirectory = spoolDirectory };
        }

        options = options with
        {
            SpoolSize = Get("SPOOL_SIZE") is { } spoolSize ? ParseSize("SPOOL_SIZE", spoolSize, "8GiB") : Math.Max(4L * 1024 * 1024 * 1024, options.MaxSize),
        };

        if (Get("MAX_FILLS") is { } fills)
        {
            options = options with { MaxFills = int.TryParse(fills, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0
                ? n : throw new UsageException($"invalid {Prefix}MAX_FILLS \"{fills}\": expected a positive integer such as 64") };
        }

        if (options.MinSize > options.MaxSize)
        {
            throw new UsageException($"{Prefix}MIN_SIZE must not be larger than {Prefix}MAX_SIZE");
        }

        if (options.SpoolSize < Math.Max(options.MinSize, 1))
        {
            // Every fill spools its body until the store has it: a budget below the smallest body stored stores nothing,
            // and the cache would look on while every fill was given up as spool_full.
            throw new UsageException(
                $"invalid {Prefix}SPOOL_SIZE \"{Get("SPOOL_SIZE")}\": smaller than {Prefix}MIN_SIZE ({options.MinSize} bytes), so no response could be stored; give at least that, e.g. 4GiB");
        }

        return options;
    }

    private static long ParseSize(string name, string value, string example) =>
        ByteSize.TryParse(value, out var bytes) && bytes >= 0
            ? bytes
            : throw new UsageException($"invalid {Prefix}{name} \"{value}\": expected a size in human units such as {example}");

    /// <summary>Integer seconds (as upstream) or a Go duration such as 20s or 1m.</summary>
    private static TimeSpan ParseSeconds(string name, string value, string example, bool allowZero = false)
    {
        TimeSpan result;
        if (int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds))
        {
            result = TimeSpan.FromSeconds(seconds);
        }
        else if (!GoDuration.TryParse(value, out result))
        {
            throw new UsageException($"invalid {Prefix}{name} \"{value}\": expected seconds or a duration such as {example}");
        }

        return result > TimeSpan.Zero || (allowZero && result == TimeSpan.Zero)
            ? GoDuration.ForTimers(result)
            : throw new UsageException($"invalid {Prefix}{name} \"{value}\": must be greater than 0, e.g. {example}");
    }

    private static bool ParseBool(string name, string value) => value.ToLowerInvariant() switch
    {
        "1" or "true" or "on" or "yes" => true,
        "0" or "false" or "off" or "no" => false,
        _ => throw new UsageException($"invalid {Prefix}{name} \"{value}\": expected true or false"),
    };

    /// <summary>Never shows the secret (records print every property by default).</summary>
    public override string ToString() => $"cache {Endpoint} bucket {Bucket} (access key {AccessKey})";
}
