using System.Buffers;

namespace Sidekick.Forwarding;

/// <summary>
/// Buffers the small body of an idempotent request (PUT, DELETE, …) before forwarding, so that when a
/// backend fails before answering, the same bytes can be sent to another backend. Bodies above the bound,
/// of unknown length, of non-idempotent requests, or that do not fit in the process's <see cref="ReplayBudget"/>
/// are never buffered and never replayed.
/// </summary>
internal sealed class ReplayableBody : IDisposable
{
    /// <summary>The first buffer: memory is taken as the body arrives, not as the client announces it.</summary>
    internal const int InitialBufferBytes = 16 * 1024;

    private readonly MemoryStream _stream;
    private readonly ReplayBudget _budget;
    private readonly long _reserved;
    private byte[]? _buffer;

    private ReplayableBody(byte[] buffer, int length, ReplayBudget budget, long reserved)
    {
        _buffer = buffer;
        _budget = budget;
        _reserved = reserved;
        _stream = new MemoryStream(buffer, 0, length, writable: false);
    }

    /// <summary>Reads the body into a pooled buffer when the request qualifies and the budget allows; null otherwise.</summary>
    public static async ValueTask<ReplayableBody?> CaptureAsync(HttpContext context, long maxBytes, ReplayBudget budget)
    {
        var request = context.Request;
        if (maxBytes <= 0 || request.ContentLength is not { } length || length <= 0 || length > maxBytes || !IdempotentMethods.Contains(request.Method))
        {
            return null;
        }

        // The whole announced length is reserved at once (whether to buffer must be known before the first byte
        // goes to a backend); the memory itself grows with what arrives.
        if (!budget.TryReserve(length))
        {
            return null;
        }

        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(length, InitialBufferBytes));
        var read = 0;
        try
        {
            while (read < length)
            {
                if (read == buffer.Length)
                {
                    var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(length, (long)buffer.Length * 2));
                    buffer.AsSpan(0, read).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = larger;
                }

                var n = await request.Body.ReadAsync(buffer.AsMemory(read, (int)Math.Min(length - read, buffer.Length - read)), context.RequestAborted);
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
            budget.Release(length);
            throw;
        }

        if (read != length)
        {
            // The client sent less than it announced; let the forwarder report that as a client error.
            ArrayPool<byte>.Shared.Return(buffer);
            budget.Release(length);
            throw new IOException($"request body ended after {read} of {length} bytes");
        }

        var body = new ReplayableBody(buffer, read, budget, length);
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
            _budget.Release(_reserved);
        }
    }
}
