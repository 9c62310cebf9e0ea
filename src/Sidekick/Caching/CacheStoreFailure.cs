using System.Net;
using System.Net.Sockets;
using Amazon.Runtime;

namespace Sidekick.Caching;

/// <summary>Why the cache store failed, in classes an operator acts on differently (and few enough for a metric label).</summary>
internal enum CacheStoreFailureReason
{
    /// <summary>No connection: refused, name not resolved, network down, connection reset.</summary>
    Unreachable,

    /// <summary>The store answered 403: unknown access key, wrong secret, a token or policy that refuses.</summary>
    CredentialsRejected,

    /// <summary>The store answered NoSuchBucket: SIDEKICK_CACHE_BUCKET does not exist (sidekick never creates it).</summary>
    BucketMissing,

    /// <summary>No answer in time (the probe's 5 s, a lookup's 2 s).</summary>
    Timeout,

    /// <summary>Anything else: a 5xx from the store, a malformed answer.</summary>
    Other,
}

/// <summary>
/// One store failure as the operator reads it: the class (<see cref="Reason"/>) and a short detail naming what the
/// store or the network said, e.g. "connection refused" or "InvalidAccessKeyId: The AWS Access Key Id you provided
/// does not exist in our records.". Never an exception's type or a stack trace.
/// </summary>
internal sealed partial record CacheStoreFailure(CacheStoreFailureReason Reason, string Detail)
{
    /// <summary>
    /// The most of a store's own text a failure keeps. The AWS SDK puts an error's whole Message, or the whole body of
    /// one it cannot parse (a gateway's error page), in its exception: a store answering 20 MiB of it made log lines
    /// and a /v1/state of 20 MiB, on every probe.
    /// </summary>
    public const int MaxDetailLength = 512;

    private readonly string _detail = Bounded(Detail);

    public string Detail
    {
        get => _detail;
        init => _detail = Bounded(value);
    }

    private static string Bounded(string detail) => detail.Length <= MaxDetailLength
        ? detail
        : string.Concat(detail.AsSpan(0, MaxDetailLength), $"… ({detail.Length} characters in all)");

    public static readonly CacheStoreFailureReason[] Reasons = Enum.GetValues<CacheStoreFailureReason>();

    /// <summary>The metric label and JSON value: unreachable, credentials_rejected, bucket_missing, timeout, other.</summary>
    public string Label => LabelOf(Reason);

    /// <summary>The words of a log line: "unreachable", "credentials rejected", ….</summary>
    public string Words => Reason switch
    {
        CacheStoreFailureReason.Unreachable => "unreachable",
        CacheStoreFailureReason.CredentialsRejected => "credentials rejected",
        CacheStoreFailureReason.BucketMissing => "bucket missing",
        CacheStoreFailureReason.Timeout => "not answering",
        _ => "failing",
    };

    public static string LabelOf(CacheStoreFailureReason reason) => reason switch
    {
        CacheStoreFailureReason.Unreachable => "unreachable",
        CacheStoreFailureReason.CredentialsRejected => "credentials_rejected",
        CacheStoreFailureReason.BucketMissing => "bucket_missing",
        CacheStoreFailureReason.Timeout => "timeout",
        _ => "other",
    };

    /// <summary>The status the store answered with, when it answered (set by <see cref="Of"/>).</summary>
    public HttpStatusCode? Status { get; init; }

    /// <summary>
    /// Whether the store was only busy or failing for a moment, unlike down or refusing: no answer in time, or a 5xx
    /// (S3's 503 SlowDown when a prefix gets more requests than it takes).
    /// </summary>
    public bool Busy => Reason == CacheStoreFailureReason.Timeout || Status >= HttpStatusCode.InternalServerError;

    /// <summary>A failure nothing described (a caller that had no exception to hand).</summary>
    public static CacheStoreFailure Unknown { get; } = new(CacheStoreFailureReason.Other, "store operation failed");

    public static CacheStoreFailure Of(Exception? error, TimeSpan? timeout = null)
    {
        if (error is null)
        {
            return Unknown;
        }

        // The store's own answer first: the SDK wraps transport errors too, but then it has no status code.
        for (var current = error; current is not null; current = current.InnerException)
        {
            if (current is AmazonServiceException { StatusCode: not 0 } service && service.ErrorCode is not null)
            {
                return Answered(service) with { Status = service.StatusCode };
            }
        }

        for (var current = error; current is not null; current = current.InnerException)
        {
            switch (current)
            {
                case SocketException socket:
                    return socket.SocketErrorCode switch
                    {
                        SocketError.TimedOut => new(CacheStoreFailureReason.Timeout, "connect timed out"),
                        SocketError.ConnectionRefused => new(CacheStoreFailureReason.Unreachable, "connection refused"),
                        SocketError.HostNotFound or SocketError.NoData or SocketError.TryAgain => new(CacheStoreFailureReason.Unreachable, "host not found"),
                        SocketError.HostUnreachable or SocketError.NetworkUnreachable or SocketError.NetworkDown => new(CacheStoreFailureReason.Unreachable, "host unreachable"),
                        SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown => new(CacheStoreFailureReason.Unreachable, "connection reset"),
                        _ => new(CacheStoreFailureReason.Unreachable, $"connection failed ({socket.SocketErrorCode})"),
                    };
                case StoreAnswerTooLongException tooLong:
                    return new(tooLong.Status is HttpStatusCode.Forbidden or HttpStatusCode.Unauthorized
                        ? CacheStoreFailureReason.CredentialsRejected
                        : CacheStoreFailureReason.Other, tooLong.Message) { Status = tooLong.Status };
                case HttpRequestException { StatusCode: { } status }:
                    // The store answered a read sidekick sends itself (StoreRequests) in a way it does not describe further.
                    return status is HttpStatusCode.Forbidden or HttpStatusCode.Unauthorized
                        ? new(CacheStoreFailureReason.CredentialsRejected, current.Message) { Status = status }
                        : new(CacheStoreFailureReason.Other, current.Message) { Status = status };
                case HttpRequestException { HttpRequestError: HttpRequestError.NameResolutionError }:
                    return new(CacheStoreFailureReason.Unreachable, "host not found");
                case HttpRequestException { HttpRequestError: HttpRequestError.SecureConnectionError }:
                    return new(CacheStoreFailureReason.Unreachable, "TLS handshake failed");
                case TimeoutException:
                case OperationCanceledException:
                    return new(CacheStoreFailureReason.Timeout, timeout is { } after ? $"no answer within {Cli.GoDuration.Format(after)}" : "no answer in time");
            }
        }

        var innermost = error;
        while (innermost.InnerException is not null)
        {
            innermost = innermost.InnerException;
        }

        return new(innermost is IOException or HttpRequestException ? CacheStoreFailureReason.Unreachable : CacheStoreFailureReason.Other, innermost.Message);
    }

    /// <summary>
    /// What a log line says of a store call that failed: for an answer of the store, its status and code with the
    /// bounded detail ("HTTP 500 InternalError: …"), as <see cref="Of"/> has it; for anything else (a stalled write,
    /// a cut connection) the exception's own message, bounded too. The SDK's message of an error it could not parse
    /// carries the body it read ("Response Body: …"): up to 64 KiB of a store's text in one line.
    /// </summary>
    public static string Describe(Exception error, string? accessKey)
    {
        for (var current = error; current is not null; current = current.InnerException)
        {
            if (current is AmazonServiceException { StatusCode: not 0, ErrorCode: not null } or StoreAnswerTooLongException)
            {
                return Of(error).WithoutSecrets(accessKey).Detail;
            }
        }

        return new CacheStoreFailure(CacheStoreFailureReason.Other, error.Message).WithoutSecrets(accessKey).Detail;
    }

    /// <summary>
    /// This failure as it may be printed (--log, --json, /v1/state's lastError): a store's error text can echo the
    /// request's <c>Credential=AKIA…/20261207/us-east-1/s3/aws4_request</c> or name the access key; both go, as
    /// <c>Signature=</c> does where the text is printed.
    /// </summary>
    public CacheStoreFailure WithoutSecrets(string? accessKey)
    {
        var detail = CredentialValue().Replace(Detail, "${name}" + Observability.SecretRedaction.Redacted);
        if (!string.IsNullOrEmpty(accessKey))
        {
            detail = detail.Replace(accessKey, Observability.SecretRedaction.Redacted, StringComparison.Ordinal);
        }

        return ReferenceEquals(detail, Detail) || detail == Detail ? this : this with { Detail = detail };
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"(?<name>\bCredential=)[^,;&\s""'<>]*", System.Text.RegularExpressions.RegexOptions.IgnoreCase | System.Text.RegularExpressions.RegexOptions.CultureInvariant)]
    private static partial System.Text.RegularExpressions.Regex CredentialValue();

    private static CacheStoreFailure Answered(AmazonServiceException answer)
    {
        var detail = string.IsNullOrWhiteSpace(answer.Message) ? answer.ErrorCode : $"{answer.ErrorCode}: {answer.Message}";
        if (answer.ErrorCode == "NoSuchBucket")
        {
            return new(CacheStoreFailureReason.BucketMissing, detail);
        }

        return answer.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.Unauthorized
               || answer.ErrorCode is "InvalidAccessKeyId" or "SignatureDoesNotMatch" or "AccessDenied" or "InvalidToken" or "ExpiredToken"
            ? new(CacheStoreFailureReason.CredentialsRejected, detail)
            : new(CacheStoreFailureReason.Other, $"HTTP {(int)answer.StatusCode} {detail}");
    }
}
