using Sidekick.Cli;

namespace Sidekick.Forwarding.Http1;

/// <summary>
/// SIDEKICK_FORWARDER picks the forwarding path: <c>http1</c> (the default) lets <see cref="Http1Forwarder"/>
/// carry plain requests; <c>yarp</c> sends every request through YARP. Both pass the same test suite; the
/// switch exists for that, and as an operator's way back should the fast path ever misbehave.
/// </summary>
internal static class ForwarderChoice
{
    public const string Variable = "SIDEKICK_FORWARDER";

    public static bool UsesHttp1Path(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "http1" => true,
        "yarp" => false,
        _ => throw new FatalException($"invalid {Variable} '{value}': expected 'http1' (the default) or 'yarp'"),
    };
}
