using Microsoft.Win32.SafeHandles;

namespace Sidekick.Caching;

/// <summary>
/// A read-only, seekable view of <paramref name="size"/> bytes of a spool file from <paramref name="start"/>:
/// what an upload sends, read from the file as the store takes it (the signer reads it once for the payload
/// hash, rewinds, and the HTTP client reads it again), so no upload holds its part in memory. The spool's
/// handle stays owned by the fill.
/// </summary>
internal sealed class SpoolSlice(SafeFileHandle spool, long start, long size) : Stream
{
    private long _position;

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => false;
    public override long Length => size;

    public override long Position
    {
        get => _position;
        set => _position = value is >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value));
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        var count = Available(buffer.Length);
        if (count == 0)
        {
            return 0;
        }

        int read;
        try
        {
            read = RandomAccess.Read(spool, buffer[..count], start + _position);
        }
        catch (IOException ex)
        {
            throw new ReadFailure(ex.Message, ex);
        }

        return Advance(read);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var count = Available(buffer.Length);
        if (count == 0)
        {
            return 0;
        }

        int read;
        try
        {
            read = await RandomAccess.ReadAsync(spool, buffer[..count], start + _position, cancellationToken);
        }
        catch (IOException ex)
        {
            throw new ReadFailure(ex.Message, ex);
        }

        return Advance(read);
    }

    public override long Seek(long offset, SeekOrigin origin) => Position = origin switch
    {
        SeekOrigin.Begin => offset,
        SeekOrigin.Current => _position + offset,
        _ => size + offset,
    };

    public override void Flush() { }
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    /// <summary>
    /// Whether <paramref name="error"/>, or an error it wraps (the store's client may wrap what a stream threw), is
    /// a failure of the spool file rather than of the store.
    /// </summary>
    public static bool FailedIn(Exception? error)
    {
        for (; error is not null; error = error.InnerException)
        {
            if (error is ReadFailure)
            {
                return true;
            }
        }

        return false;
    }

    private int Available(int wanted) => (int)Math.Clamp(size - _position, 0, wanted);

    private int Advance(int read)
    {
        if (read == 0)
        {
            throw new ReadFailure("the spool file ended early", null);
        }

        _position += read;
        return read;
    }

    /// <summary>The spool file could not be read (not the store's fault).</summary>
    private sealed class ReadFailure(string message, Exception? inner) : IOException(message, inner);
}
