namespace Sidekick.Forwarding;

/// <summary>
/// A backend answered an HTTP/2 WebSocket (an extended CONNECT, RFC 8441, sent to it as an HTTP/1.1 upgrade) with a
/// 2xx instead of 101 Switching Protocols. Over HTTP/1.1 such an answer is relayed as it is: the server declined the
/// upgrade and the client reads an ordinary response. Over HTTP/2 a 2xx to a CONNECT says the tunnel is open (RFC 9110
/// §9.3.6), which it is not, and Kestrel refuses to send one with content: so it cannot be relayed, and the client gets
/// the 502 of a proxy whose backend sent an invalid response for the request (RFC 9110 §15.6.3).
/// </summary>
internal sealed class UnswitchedUpgradeException(int status)
    : Exception($"the backend answered the WebSocket upgrade with {status} instead of 101 Switching Protocols")
{
    /// <summary>What a client is told (<see cref="Health.TransportErrors.Summarize"/>): a fixed phrase.</summary>
    public const string Summary = "the backend did not switch to the WebSocket protocol";
}
