using System.Buffers;
using System.Threading.Channels;
using Amazon.S3.Model;

namespace Sidekick.Caching;

/// <summary>
/// Writes one response into the bucket while it is being sent to the client. Chunks are copied into pooled
/// buffers and queued; a background uploader packs them into parts (multipart upload, or one PUT for a small
/// body). The queue is bounded: when the store falls behind by more than the allowed lag, the fill is
/// abandoned so the client is never slowed. The entry becomes visible only when the upload completes with
/// exactly the announced length; an abandoned fill aborts its multipart upload.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "A CancellationTokenSource without a timer holds nothing to release; Abandon may run after the upload ended.")]
internal sealed class CacheFill
{
    private const int ChunkSize = 64 * 1024;

    private readonly S3CacheStore _store;
    private readonly string _key;
    private readonly IReadOnlyDictionary<string, string> _metadata;
    private readonly long _expectedLength;
    private readonly CacheOptions _options;
    private readonly CacheMetrics _metrics;
    private readonly Channel<(byte[] Buffer, int Length)> _chunks = Channel.CreateUnbounded<(byte[], int)>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly CancellationTokenSource _abandon = new();
    private readonly Task<bool> _upload;
    private long _queued;
    private long _offered;

    public CacheFill(S3CacheStore store, string key, IReadOnlyDictionary<string, string> metadata, long expectedLength, CacheOptions options, CacheMetrics metrics)
    {
        _store = store;
        _key = key;
        _metadata = metadata;
        _expectedLength = expectedLength;
        _options = options;
        _metrics = metrics;
        metrics.FillStarted();
        _upload = Task.Run(UploadAsync);
    }

    public bool Abandoned => _abandon.IsCancellationRequested;

    /// <summary>Queues a copy of the chunk; false once the fill has been abandoned.</summary>
    public bool Offer(ReadOnlySpan<byte> data)
    {
        if (Abandoned)
        {
            return false;
        }

        if (Interlocked.Read(ref _queued) + data.Length > _options.MaxLag)
        {
            Abandon(); // the store fell behind
            return false;
        }

        while (!data.IsEmpty)
        {
            var length = Math.Min(ChunkSize, data.Length);
            var buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
            data[..length].CopyTo(buffer);
            Interlocked.Add(ref _queued, length);
            _offered += length;
            _chunks.Writer.TryWrite((buffer, length));
            data = data[length..];
        }

        return true;
    }

    /// <summary>Signals the end of the body; true when the entry was committed.</summary>
    public async Task<bool> CompleteAsync()
    {
        if (_offered != _expectedLength)
        {
            Abandon(); // the body is not what the headers announced: never store it
        }

        _chunks.Writer.TryComplete();
        return await _upload;
    }

    public void Abandon()
    {
        if (!_abandon.IsCancellationRequested)
        {
            _abandon.Cancel();
            _chunks.Writer.TryComplete();
        }
    }

    private async Task<bool> UploadAsync()
    {
        var part = ArrayPool<byte>.Shared.Rent(_options.PartSize);
        var filled = 0;
        var parts = new List<PartETag>();
        string? uploadId = null;
        var token = _abandon.Token;
        try
        {
            await foreach (var (buffer, length) in _chunks.Reader.ReadAllAsync(CancellationToken.None))
            {
                try
                {
                    if (token.IsCancellationRequested)
                    {
                        continue; // drain and return buffers
                    }

                    var offset = 0;
                    while (offset < length)
                    {
                        var n = Math.Min(length - offset, _options.PartSize - filled);
                        Buffer.BlockCopy(buffer, offset, part, filled, n);
                        filled += n;
                        offset += n;
                        if (filled == _options.PartSize)
                        {
                            uploadId ??= await _store.BeginMultipartAsync(_key, _metadata, token);
                            parts.Add(await _store.UploadPartAsync(_key, uploadId, parts.Count + 1, part, filled, token));
                            filled = 0;
                        }
                    }
                }
                finally
                {
                    Interlocked.Add(ref _queued, -length);
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }

            token.ThrowIfCancellationRequested();
            if (uploadId is null)
            {
                await _store.PutAsync(_key, part.AsMemory(0, filled), _metadata, token);
            }
            else
            {
                if (filled > 0)
                {
                    parts.Add(await _store.UploadPartAsync(_key, uploadId, parts.Count + 1, part, filled, token));
                }

                await _store.CompleteMultipartAsync(_key, uploadId, parts, token);
            }

            _metrics.FillCompleted();
            return true;
        }
        catch (Exception ex) when (ex is OperationCanceledException or Amazon.Runtime.AmazonServiceException or Amazon.Runtime.AmazonClientException or IOException or HttpRequestException)
        {
            if (ex is not OperationCanceledException)
            {
                _metrics.StoreError();
            }

            _metrics.FillAbandoned();
            if (uploadId is not null)
            {
                try
                {
                    await _store.AbortMultipartAsync(_key, uploadId);
                }
                catch (Exception abortError) when (abortError is Amazon.Runtime.AmazonServiceException or Amazon.Runtime.AmazonClientException or IOException or HttpRequestException)
                {
                    _metrics.StoreError(); // the store expires incomplete uploads by its own lifecycle rules
                }
            }

            return false;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(part);
        }
    }
}
