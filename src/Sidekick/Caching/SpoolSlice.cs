using System.Buffers;
using Microsoft.Win32.SafeHandles;

namespace Sidekick.Caching;

/// <summary>
/// A read-only, seekable view of <paramref name="size"/> bytes of a spool file from <paramref name="start"/>:
/// what an upload sends, read from the file as the store takes it (the signer reads it once for the payload
/// hash, rewinds, and the HTTP client reads it again), so no upload holds its part in memory. The spool's
/// handle stays owned by the fill.
/// </summary>
/// <remarks>
/// Reads smaller than <see cref="ReadAhead"/> are served from one pooled buffer filled by a single read of the file:
/// the signer hashes in 4 KiB reads, and one system call each cost a 1 GiB fill about 260,000 of them (with the
/// HTTP client's 8 KiB reads, ~100,000 per 256 MiB, counted with strace).
/// </remarks>
internal sealed class SpoolSlice(SafeFileHandle spool, long start, long size) : Stream
{
    /// <summary>How much of the file one read takes for small readers; reads this large go to the file directly.</summary>
    public const int ReadAhead = 256 * 1024;

    private long _position;

    private byte[]? _ahead;

    /// <summary>Called after each read that moved the position (the upload's progress, for <see cref="StoreWriteStall"/>).</summary>
    public Action? Moved { get; init; }

    // Where the buffered bytes lie in the slice: [_aheadFrom, _aheadFrom + _aheadLength).
    private long _aheadFrom;

    private int _aheadLength;

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

        if (count < ReadAhead && !Buffered)
        {
            Fill(ReadFile(Ahead().Span));
        }

        return Buffered ? FromAhead(buffer[..count]) : Advance(ReadFile(buffer[..count]));
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

        if (count < ReadAhead && !Buffered)
        {
            Fill(await ReadFileAsync(Ahead(), cancellationToken));
        }

        return Buffered ? FromAhead(buffer.Span[..count]) : Advance(await ReadFileAsync(buffer[..count], cancellationToken));
    }

    public override long Seek(long offset, SeekOrigin origin) => Position = origin switch
    {
        SeekOrigin.Begin => offset,
        SeekOrigin.Current => _position + offset,
        _ => size + offset,
    };

    public override void Flush() { }

    protected override void Dispose(bool disposing)
    {
        if (disposing && _ahead is { } ahead)
        {
            _ahead = null;
            ArrayPool<byte>.Shared.Return(ahead);
        }

        base.Dispose(disposing);
    }

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

    /// <summary>Whether the byte at the position is in the read-ahead buffer.</summary>
    private bool Buffered => _position >= _aheadFrom && _position < _aheadFrom + _aheadLength;

    /// <summary>The read-ahead buffer, as much of it as the slice has left from the position.</summary>
    private Memory<byte> Ahead() => (_ahead ??= ArrayPool<byte>.Shared.Rent(ReadAhead)).AsMemory(0, Available(ReadAhead));

    private void Fill(int read)
    {
        _aheadFrom = _position;
        _aheadLength = read;
    }

    private int FromAhead(Span<byte> buffer)
    {
        var offset = (int)(_position - _aheadFrom);
        var count = Math.Min(buffer.Length, _aheadLength - offset);
        _ahead.AsSpan(offset, count).CopyTo(buffer);
        return Advance(count);
    }

    /// <summary>Reads the file from the position on (a spool read error is a <see cref="ReadFailure"/>).</summary>
    private int ReadFile(Span<byte> buffer)
    {
        try
        {
            return RandomAccess.Read(spool, buffer, start + _position);
        }
        catch (IOException ex)
        {
            throw new ReadFailure(ex.Message, ex);
        }
    }

    private async ValueTask<int> ReadFileAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        try
        {
            return await RandomAccess.ReadAsync(spool, buffer, start + _position, cancellationToken);
        }
        catch (IOException ex)
        {
            throw new ReadFailure(ex.Message, ex);
        }
    }

    private int Advance(int read)
    {
        if (read == 0)
        {
            throw new ReadFailure("the spool file ended early", null);
        }

        _position += read;
        Moved?.Invoke();
        return read;
    }

    /// <summary>The spool file could not be read (not the store's fault).</summary>
    private sealed class ReadFailure(string message, Exception? inner) : IOException(message, inner);
}
