using System.Buffers;

namespace Sidekick.Forwarding;

/// <summary>
/// Buffers the small body of an idempotent request (PUT, DELETE, …) before forwarding, so that when a
/// backend fails before answering, the same bytes can be sent to another backend. Bodies above the bound,
/// of unknown length, or of non-idempotent requests are never buffered and never replayed.
/// </summary>
internal sealed class ReplayableBody : IDisposable
{
    private readonly MemoryStream _stream;
    private byte[]? _buffer;

    private ReplayableBody(byte[] buffer, int length)
    {
        _buffer = buffer;
        _stream = new MemoryStream(buffer, 0, length, writable: false);
    }

    /// <summary>Reads the body into a pooled buffer when the request qualifies; null otherwise.</summary>
    public static async ValueTask<ReplayableBody?> CaptureAsync(HttpContext context, long maxBytes)
    {
        var request = context.Request;
        if (maxBytes <= 0 || request.ContentLength is not { } length || length <= 0 || length > maxBytes || !IdempotentMethods.Contains(request.Method))
        {
            return null;
        }

        var buffer = ArrayPool<byte>.Shared.Rent((int)length);
        var read = 0;
        try
        {
            while (read < length)
            {
                var n = await request.Body.ReadAsync(buffer.AsMemory(read, (int)length - read), context.RequestAborted);
                if (n == 0)
                {
                    break;
                }

                read += n;
            }
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }

        if (read != length)
        {
            // The client sent less than it announced; let the forwarder report that as a client error.
            ArrayPool<byte>.Shared.Return(buffer);
            throw new IOException($"request body ended after {read} of {length} bytes");
        }

        var body = new ReplayableBody(buffer, read);
        request.Body = body._stream;
        return body;
    }

    /// <summary>Rewinds for another attempt.</summary>
    public void Rewind() => _stream.Position = 0;

    public void Dispose()
    {
        _stream.Dispose();
        if (Interlocked.Exchange(ref _buffer, null) is { } buffer)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
