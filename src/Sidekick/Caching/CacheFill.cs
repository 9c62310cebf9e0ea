using System.Threading.Channels;
using Amazon.S3.Model;

namespace Sidekick.Caching;

/// <summary>
/// Writes one response into the bucket while it is being sent to the client. The body is copied straight
/// into part buffers; each full part goes to a background uploader (multipart upload, or one PUT for a body
/// that fits one part). At most <see cref="CacheOptions.MaxLag"/> worth of full parts (at least one) may wait
/// for the store; when another part fills up before the store has caught up, the fill is abandoned so the
/// client is never slowed. Memory per fill is therefore bounded by the part being filled plus the waiting
/// parts (docs/cache.md). The entry becomes visible only when the upload completes with exactly the announced
/// length; an abandoned fill aborts its multipart upload. Offer, CompleteAsync and Abandon are called by the
/// one loop copying the response.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "A CancellationTokenSource without a timer holds nothing to release; Abandon may run after the upload ended.")]
internal sealed class CacheFill
{
    private readonly S3CacheStore _store;
    private readonly string _key;
    private readonly IReadOnlyDictionary<string, string> _metadata;
    private readonly long _expectedLength;
    private readonly PartBuffers _buffers;
    private readonly int _maxWaiting;
    private readonly CacheMetrics _metrics;
    private readonly Channel<Part> _parts = Channel.CreateUnbounded<Part>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly CancellationTokenSource _abandon = new();
    private readonly Task<bool> _upload;
    private byte[]? _filling;
    private int _filled;
    private int _waiting;
    private long _offered;

    public CacheFill(S3CacheStore store, string key, IReadOnlyDictionary<string, string> metadata, long expectedLength,
        CacheOptions options, PartBuffers buffers, CacheMetrics metrics)
    {
        _store = store;
        _key = key;
        _metadata = metadata;
        _expectedLength = expectedLength;
        _buffers = buffers;
        _maxWaiting = WaitingParts(options);
        _metrics = metrics;
        metrics.FillStarted();
        _upload = Task.Run(UploadAsync);
    }

    public bool Abandoned => _abandon.IsCancellationRequested;

    /// <summary>Copies the chunk into the current part; false once the fill has been abandoned.</summary>
    public bool Offer(ReadOnlySpan<byte> data)
    {
        if (Abandoned)
        {
            ReleaseFilling(); // the uploader may have given up on a store error
            return false;
        }

        _offered += data.Length;
        while (!data.IsEmpty)
        {
            _filling ??= _buffers.Rent();
            var n = Math.Min(data.Length, _filling.Length - _filled);
            data[..n].CopyTo(_filling.AsSpan(_filled));
            _filled += n;
            data = data[n..];
            if (_filled == _filling.Length)
            {
                if (Volatile.Read(ref _waiting) >= _maxWaiting)
                {
                    Abandon(); // the store fell behind
                    return false;
                }

                Hand(isLast: false);
            }
        }

        return true;
    }

    /// <summary>Signals the end of the body; true when the entry was committed.</summary>
    public async Task<bool> CompleteAsync()
    {
        if (_offered != _expectedLength || Abandoned)
        {
            Abandon(); // already given up, or the body is not what the headers announced: never store it
        }
        else
        {
            _filling ??= _buffers.Rent();
            Hand(isLast: true);
        }

        _parts.Writer.TryComplete();
        return await _upload;
    }

    public void Abandon()
    {
        Stop();
        ReleaseFilling();
    }

    /// <summary>Ends the fill; safe from the uploader too (it never touches the part being filled).</summary>
    private void Stop()
    {
        if (!_abandon.IsCancellationRequested)
        {
            _abandon.Cancel();
            _parts.Writer.TryComplete();
        }
    }

    private void ReleaseFilling()
    {
        if (_filling is { } buffer)
        {
            _filling = null;
            _buffers.Return(buffer);
        }
    }

    private static int WaitingParts(CacheOptions options) => (int)Math.Max(1, options.MaxLag / options.PartSize);

    private void Hand(bool isLast)
    {
        Interlocked.Increment(ref _waiting);
        if (!_parts.Writer.TryWrite(new Part(_filling!, _filled, isLast)))
        {
            Interlocked.Decrement(ref _waiting); // stopped meanwhile: the part stays ours
            ReleaseFilling();
        }

        _filling = null;
        _filled = 0;
    }

    private async Task<bool> UploadAsync()
    {
        var etags = new List<PartETag>();
        string? uploadId = null;
        var committed = false;
        var token = _abandon.Token;
        // A body larger than one part needs a multipart upload: start it now, while the first part fills,
        // so the store is not a round trip behind when that part is ready.
        var begin = _expectedLength > _buffers.PartSize ? _store.BeginMultipartAsync(_key, _metadata, token) : null;
        try
        {
            await foreach (var part in _parts.Reader.ReadAllAsync(CancellationToken.None))
            {
                try
                {
                    if (token.IsCancellationRequested)
                    {
                        continue; // drain and return the buffers
                    }

                    if (part.IsLast && uploadId is null)
                    {
                        await _store.PutAsync(_key, part.Buffer.AsMemory(0, part.Length), _metadata, token);
                        committed = true;
                        continue;
                    }

                    uploadId ??= await (begin ?? _store.BeginMultipartAsync(_key, _metadata, token));
                    if (part.Length > 0)
                    {
                        etags.Add(await _store.UploadPartAsync(_key, uploadId, etags.Count + 1, part.Buffer, part.Length, token));
                    }

                    if (part.IsLast)
                    {
                        await _store.CompleteMultipartAsync(_key, uploadId, etags, token);
                        committed = true;
                    }
                }
                finally
                {
                    Interlocked.Decrement(ref _waiting);
                    _buffers.Return(part.Buffer);
                }
            }

            token.ThrowIfCancellationRequested();
            if (!committed)
            {
                throw new OperationCanceledException("the body ended without its last part");
            }

            _metrics.FillCompleted();
            return true;
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            if (ex is not OperationCanceledException)
            {
                _metrics.StoreError(ex);
            }

            Stop(); // stop the copy loop from filling parts nobody will upload

            _metrics.FillAbandoned();
            uploadId ??= await StartedUploadAsync(begin);
            if (uploadId is not null)
            {
                try
                {
                    await _store.AbortMultipartAsync(_key, uploadId);
                }
                catch (Exception abortError) when (S3CacheStore.IsStoreError(abortError))
                {
                    _metrics.StoreError(abortError); // the store expires incomplete uploads by its own lifecycle rules
                }
            }

            return false;
        }
    }

    /// <summary>The id of an upload begun early but not used yet, so it can be aborted; null if it never began.</summary>
    private static async Task<string?> StartedUploadAsync(Task<string>? begin)
    {
        try
        {
            return begin is null ? null : await begin;
        }
        catch (Exception ex) when (S3CacheStore.IsStoreError(ex))
        {
            return null;
        }
    }

    private readonly record struct Part(byte[] Buffer, int Length, bool IsLast);
}
