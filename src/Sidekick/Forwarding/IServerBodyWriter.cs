using System.IO.Pipelines;

namespace Sidekick.Forwarding;

/// <summary>
/// A response body that can hand a forwarder the server's own output writer, so a long body is received
/// from the backend straight into the buffers the server sends from (no copy through a stream); the
/// forwarder reports what it wrote, so the exchange is counted as if it had gone through the stream.
/// </summary>
internal interface IServerBodyWriter
{
    /// <summary>The server's writer, or null when the bytes must go through the stream.</summary>
    PipeWriter? Writer { get; }

    /// <summary>Starts the response: its head goes into the output buffers, to leave with the first body bytes.</summary>
    Task StartAsync();

    /// <summary>Counts bytes written through <see cref="Writer"/>.</summary>
    void Wrote(ReadOnlySpan<byte> data);
}
