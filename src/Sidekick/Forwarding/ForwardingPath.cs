namespace Sidekick.Forwarding;

/// <summary>Which forwarder carried an exchange.</summary>
internal enum ForwardingPath
{
    /// <summary>Sidekick's own HTTP/1.1 path (<see cref="Http1.Http1Forwarder"/>).</summary>
    Http1,

    /// <summary>YARP's <c>IHttpForwarder</c> over .NET's HttpClient stack.</summary>
    Yarp,
}

/// <summary>
/// The one decision of which path carries a request, and why: visible in the trace record, the
/// <c>sidekick_forwarded_total{path,reason}</c> metric and the --debug output.
/// </summary>
internal readonly record struct PathChoice(ForwardingPath Path, PathReason Reason)
{
    public string PathName => Path == ForwardingPath.Http1 ? "http1" : "yarp";

    public string ReasonText => Reasons[(int)Reason];

    /// <summary>Label values, one per <see cref="PathReason"/> in order (Prometheus and traces).</summary>
    public static readonly string[] Reasons =
    [
        "plain", "forced", "http_proxy", "tls_backend", "connect", "expect_100", "upgrade", "body_unknown_length", "body_over_64k", "target_not_origin_form",
    ];
}

/// <summary>Why a request took its path (label values in <see cref="PathChoice.Reasons"/>).</summary>
internal enum PathReason
{
    /// <summary>A plain HTTP/1.1 exchange: no body, or a small one of known length.</summary>
    Plain,

    /// <summary>SIDEKICK_FORWARDER=yarp: the operator's way back.</summary>
    Forced,

    /// <summary>HTTP_PROXY/HTTPS_PROXY is set: HttpClient talks through the proxy.</summary>
    HttpProxy,

    /// <summary>An https:// backend.</summary>
    TlsBackend,

    /// <summary>A CONNECT request.</summary>
    Connect,

    /// <summary>Expect: 100-continue, which YARP's handler waits on.</summary>
    Expect100,

    /// <summary>An upgrade (WebSocket) or extended CONNECT.</summary>
    Upgrade,

    /// <summary>A chunked request body: YARP streams it.</summary>
    BodyUnknownLength,

    /// <summary>A request body over 64 KiB, which YARP sends while reading an early response.</summary>
    BodyOver64K,

    /// <summary>An absolute-form or asterisk target, kept as YARP handles it.</summary>
    TargetNotOriginForm,
}
