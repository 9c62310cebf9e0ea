using System.IO.Pipelines;

namespace Sidekick.Forwarding;

/// <summary>
/// A response body that can hand a forwarder the server's own output writer, so a long body is received
/// from the backend straight into the buffers the server sends from (no copy through a stream); the
/// forwarder reports what it wrote, so the exchange is counted as if it had gone through the stream.
/// </summary>
internal interface IServerBodyWriter
{
    /// <summary>The server's own writer (start the response first, so its head goes out with the first body bytes).</summary>
    PipeWriter ServerWriter { get; }

    /// <summary>Counts bytes written through <see cref="ServerWriter"/>.</summary>
    void Wrote(ReadOnlySpan<byte> data);
}
