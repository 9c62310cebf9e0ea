using System.Net.Sockets;
using System.Security.Authentication;
using Sidekick.Topology;

namespace Sidekick.Health;

/// <summary>Short, operator-readable descriptions of transport failures (no stack traces, no nesting noise).</summary>
internal static class TransportErrors
{
    public static ProbeFailureKind Classify(Exception exception)
    {
        for (var current = exception; current is not null; current = current.InnerException)
        {
            switch (current)
            {
                case SocketException { SocketErrorCode: SocketError.ConnectionRefused }:
                    return ProbeFailureKind.Refused;
                case SocketException { SocketErrorCode: SocketError.TimedOut }:
                case TimeoutException:
                    return ProbeFailureKind.Timeout;
                case AuthenticationException:
                    return ProbeFailureKind.Tls;
            }
        }

        return ProbeFailureKind.Other;
    }

    /// <summary>
    /// What a client may be told about a failed exchange: one phrase from a fixed list, never an exception's
    /// text (which can carry .NET internals, header names or addresses). The full story goes to the log and trace.
    /// </summary>
    public static string Summarize(Exception? exception, bool timedOut)
    {
        for (var current = exception; current is not null; current = current.InnerException)
        {
            switch (current)
            {
                case SocketException socket:
                    return socket.SocketErrorCode switch
                    {
                        SocketError.ConnectionRefused => "connection refused",
                        SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown => "connection reset",
                        SocketError.TimedOut => "connect timed out",
                        SocketError.HostNotFound or SocketError.NoData or SocketError.TryAgain => "host not found",
                        SocketError.HostUnreachable or SocketError.NetworkUnreachable => "host unreachable",
                        _ => "connection failed",
                    };
                case AuthenticationException:
                    return "TLS handshake failed";
                case TimeoutException:
                    return "timed out";
                case HttpRequestException { HttpRequestError: HttpRequestError.InvalidResponse }:
                    return "invalid response";
                case HttpRequestException { HttpRequestError: HttpRequestError.ResponseEnded }:
                case HttpIOException { HttpRequestError: HttpRequestError.ResponseEnded }:
                    return "connection closed early";
                case HttpRequestException { HttpRequestError: HttpRequestError.NameResolutionError }:
                    return "host not found";
                case Forwarding.UnswitchedUpgradeException:
                    return Forwarding.UnswitchedUpgradeException.Summary;
            }
        }

        return timedOut ? "timed out" : "backend error";
    }

    public static string Describe(Exception exception)
    {
        for (var current = exception; current is not null; current = current.InnerException)
        {
            switch (current)
            {
                case SocketException socket:
                    return $"{socket.SocketErrorCode switch
                    {
                        SocketError.ConnectionRefused => "connection refused",
                        SocketError.ConnectionReset => "connection reset",
                        SocketError.TimedOut => "connect timed out",
                        SocketError.HostNotFound or SocketError.NoData => "host not found",
                        SocketError.HostUnreachable or SocketError.NetworkUnreachable => "host unreachable",
                        _ => socket.Message,
                    }}";
                case AuthenticationException auth:
                    return $"TLS handshake failed: {auth.Message}";
            }
        }

        var innermost = exception;
        while (innermost.InnerException is not null)
        {
            innermost = innermost.InnerException;
        }

        return innermost.Message;
    }
}
