using System.Buffers;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Amazon.Runtime;
using Amazon.S3;

namespace Sidekick.Caching;

/// <summary>
/// The store requests sidekick signs itself (<see cref="SigV4"/>) and sends on its own HTTP client, not through the AWS
/// SDK: the reads, HEAD and GET, and the copy that replaces an entry's metadata. Every cacheable request starts with a
/// read (its lookup; on stores that ignore <c>If-None-Match</c> a miss reads its lease too) and every HIT reads its body
/// with one. The SDK's pipeline of some fifteen async handlers cost ~250 µs of CPU per request and 2-4 ms before the
/// first byte on the bench machine, where s3rver answers a HEAD in under 1 ms. The copy is here because the SDK encodes
/// the '/' between bucket and key in <c>x-amz-copy-source</c>, which s3rver cannot read. The other writes (PUT, the
/// multipart uploads, deletes) and listings stay with the SDK. A read that fails on the way or gets a 5xx before its
/// body is tried once more, as the SDK's one retry did.
/// </summary>
internal sealed class StoreRequests
{
    private readonly HttpClient _client;
    private readonly TimeProvider _time;
    private readonly SigV4 _signer;
    // Where every object's URL starts, worked out once: the Host each read is signed and sent with (the bucket's own
    // name in it when virtual-hosted), and the encoded path before the key (the bucket's name when path-style).
    private readonly string _host;
    private readonly string _origin;
    private readonly string _pathPrefix;
    private readonly string _copySourcePrefix;

    public StoreRequests(CacheOptions options, HttpClient client, TimeProvider time)
    {
        _client = client;
        _time = time;
        _signer = new SigV4(options.AccessKey, options.SecretKey, options.Region);
        var endpoint = options.Endpoint;
        var hostName = options.PathStyle ? endpoint.Host : $"{options.Bucket}.{endpoint.Host}";
        _host = endpoint.IsDefaultPort ? hostName : $"{hostName}:{endpoint.Port}";
        _origin = $"{endpoint.Scheme}://{_host}";
        var basePath = endpoint.AbsolutePath.TrimEnd('/');
        _pathPrefix = SigV4.EncodePath(options.PathStyle ? $"{basePath}/{options.Bucket}/" : $"{basePath}/");
        _copySourcePrefix = SigV4.EncodePath($"/{options.Bucket}/");
    }

    /// <summary>The object's head, or null when the store has no such object.</summary>
    public async Task<StoredHead?> HeadAsync(string key, CancellationToken cancellationToken)
    {
        using var response = await SendWithRetryAsync(HttpMethod.Head, key, range: null, cancellationToken);
        if (response.StatusCode == HttpStatusCode.NotFound ||
            (response.Headers.TryGetValues(StoreHttpClients.AbsentAsAnswer.AbsentMetadata, out var marks) && marks.Contains(StoreHttpClients.AbsentAsAnswer.AbsentMark)))
        {
            return null;
        }

        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"the store answered HEAD of {key} with {(int)response.StatusCode} {response.ReasonPhrase}", null, response.StatusCode);
        }

        return HeadOf(response);
    }

    /// <summary>
    /// Opens the object for reading: the whole of it when <paramref name="range"/> is null, else the one range of bytes
    /// it names (from a given byte: a suffix range's answer could not be checked, and s3rver answers bytes=-N with
    /// bytes 0-N). Null when the store has no such object. The store's other refusals throw as the SDK's did
    /// (<see cref="AmazonS3Exception"/> with the store's status and error code, e.g. <c>NoSuchBucket</c>, or 416 for a
    /// range past the end), and so does an answer that is not the range asked for: its bytes would go out at the
    /// wrong offsets.
    /// </summary>
    public async Task<StoredObject?> GetAsync(string key, RangeItemHeaderValue? range, CancellationToken cancellationToken)
    {
        var response = await SendWithRetryAsync(HttpMethod.Get, key, range, cancellationToken);
        try
        {
            if (!response.IsSuccessStatusCode)
            {
                var refusal = await RefusalAsync(response, cancellationToken);
                if (response.StatusCode == HttpStatusCode.NotFound && refusal.Code is "NoSuchKey" or null)
                {
                    response.Dispose();
                    return null;
                }

                throw Refused(response, refusal, $"GET of {key}");
            }

            long from, to;
            if (response.StatusCode == HttpStatusCode.PartialContent && response.Content.Headers.ContentRange is { From: { } first, To: { } last })
            {
                (from, to) = (first, last);
            }
            else if (response.StatusCode == HttpStatusCode.OK && response.Content.Headers.ContentLength is { } length)
            {
                // The whole object: asked for, or a store that ignored the Range (good for a range from the start only).
                (from, to) = (0, length - 1);
            }
            else
            {
                throw new HttpRequestException($"the store answered GET of {key} with {(int)response.StatusCode} and no length", null, response.StatusCode);
            }

            if (range is { From: { } askedFrom } && from != askedFrom)
            {
                throw new HttpRequestException(
                    $"the store answered GET of {key}, bytes {askedFrom}-{range.To}, with {(int)response.StatusCode} from byte {from}", null, response.StatusCode);
            }

            return new StoredObject(HeadOf(response), await response.Content.ReadAsStreamAsync(cancellationToken), from, to, response);
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Replaces the metadata of the object at <paramref name="key"/> (S3 has no other way than copying the object onto
    /// itself), only while it is still the object <paramref name="storeETag"/> names: another sidecar may have stored a
    /// newer version since, and the old version's headers must not describe its bytes. False when the object changed or
    /// is gone. The copy source is <c>/bucket/key</c> with the key encoded as in a path: S3 and MinIO decode it, and so
    /// does s3rver, which read the SDK's encoded '/' as part of the bucket's name and answered NoSuchBucket.
    /// </summary>
    public async Task<bool> ReplaceMetadataAsync(string key, string storeETag, IReadOnlyDictionary<string, string> metadata, CancellationToken cancellationToken)
    {
        using var request = Signed(HttpMethod.Put, key,
        [
            ("x-amz-copy-source", _copySourcePrefix + SigV4.EncodePath(key)),
            ("x-amz-copy-source-if-match", storeETag),
            ("x-amz-metadata-directive", "REPLACE"),
            .. metadata.Select(m => ("x-amz-meta-" + m.Key.ToLowerInvariant(), m.Value)),
        ]);
        request.Content = new ByteArrayContent([]);
        using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        // S3 may answer a copy 200 and say in the body that it failed; a success's body (CopyObjectResult) has no Code.
        var refusal = await RefusalAsync(response, cancellationToken);
        if (response.IsSuccessStatusCode && refusal.Code is null)
        {
            return true;
        }

        if (refusal.Code is "PreconditionFailed" or "NoSuchKey" || (refusal.Code is null && response.StatusCode is HttpStatusCode.PreconditionFailed or HttpStatusCode.NotFound))
        {
            return false;
        }

        throw Refused(response, refusal, $"the metadata copy of {key}");
    }

    private async Task<HttpResponseMessage> SendWithRetryAsync(HttpMethod method, string key, RangeItemHeaderValue? range, CancellationToken cancellationToken)
    {
        try
        {
            var response = await SendAsync(method, key, range, cancellationToken);
            if (response.StatusCode < HttpStatusCode.InternalServerError || cancellationToken.IsCancellationRequested)
            {
                return response;
            }

            response.Dispose();
        }
        catch (HttpRequestException) when (!cancellationToken.IsCancellationRequested)
        {
        }

        return await SendAsync(method, key, range, cancellationToken);
    }

    private Task<HttpResponseMessage> SendAsync(HttpMethod method, string key, RangeItemHeaderValue? range, CancellationToken cancellationToken)
    {
        var request = Signed(method, key, []);
        if (range is not null)
        {
            request.Headers.Range = new RangeHeaderValue(range.From, range.To);
        }

        return _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
    }

    /// <summary>A request for the object at <paramref name="key"/>, signed now with <paramref name="fields"/> (lower-case names) among its headers.</summary>
    private HttpRequestMessage Signed(HttpMethod method, string key, (string Name, string Value)[] fields)
    {
        var path = _pathPrefix + SigV4.EncodePath(key);
        var signed = _signer.Sign(method.Method, _host, path, _time.GetUtcNow(), fields);
        var request = new HttpRequestMessage(method, new Uri(_origin + path));
        request.Headers.Host = _host;
        request.Headers.TryAddWithoutValidation("Authorization", signed.Authorization);
        request.Headers.TryAddWithoutValidation("x-amz-date", signed.AmzDate);
        request.Headers.TryAddWithoutValidation("x-amz-content-sha256", signed.ContentSha256);
        foreach (var (name, value) in fields)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        return request;
    }

    /// <summary>A refusal thrown as the SDK threw it: the store's status and error code (e.g. NoSuchBucket, SlowDown).</summary>
    private static AmazonS3Exception Refused(HttpResponseMessage response, (string? Code, string? Message, string? RequestId) refusal, string what)
    {
        var status = (int)response.StatusCode;
        return new AmazonS3Exception(
            refusal.Message ?? $"the store answered {what} with {status.ToString(CultureInfo.InvariantCulture)} {response.ReasonPhrase}",
            null, status >= 500 ? ErrorType.Receiver : ErrorType.Sender, refusal.Code, refusal.RequestId, response.StatusCode);
    }

    private static StoredHead HeadOf(HttpResponseMessage response)
    {
        var metadata = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, values) in response.Headers)
        {
            if (name.StartsWith("x-amz-meta-", StringComparison.OrdinalIgnoreCase))
            {
                metadata[name] = values.First();
            }
        }

        return new StoredHead(
            response.Headers.TryGetValues("ETag", out var etags) ? etags.FirstOrDefault() : null, response.Content.Headers.LastModified, metadata,
            SizeOf(response), response.Headers.Date);
    }

    /// <summary>
    /// The whole object's length as the store gave it: a 206's complete length (<c>Content-Range: bytes 0-99/1048576</c>;
    /// unknown for <c>/*</c>), else the Content-Length of the 200 or the HEAD. Null when the answer does not say.
    /// </summary>
    private static long? SizeOf(HttpResponseMessage response) =>
        response.StatusCode == HttpStatusCode.PartialContent
            ? response.Content.Headers.ContentRange?.Length
            : response.Content.Headers.ContentLength;

    /// <summary>How much of an error answer's body is read for its code: S3's are a few hundred bytes of XML.</summary>
    private const int MaxRefusalBody = 16 * 1024;

    /// <summary>The code, message and request id in a refusal's XML body, as the SDK would have thrown them.</summary>
    private static async Task<(string? Code, string? Message, string? RequestId)> RefusalAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        if (response.Content.Headers.ContentLength > MaxRefusalBody)
        {
            return default;
        }

        var body = ArrayPool<byte>.Shared.Rent(MaxRefusalBody);
        try
        {
            var read = 0;
            await using (var stream = await response.Content.ReadAsStreamAsync(cancellationToken))
            {
                int n;
                while (read < MaxRefusalBody && (n = await stream.ReadAsync(body.AsMemory(read, MaxRefusalBody - read), cancellationToken)) > 0)
                {
                    read += n;
                }
            }

            var text = Encoding.UTF8.GetString(body, 0, read);
            return (Element(text, "Code"), Element(text, "Message"), Element(text, "RequestId"));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(body);
        }
    }

    private static string? Element(string xml, string name)
    {
        var open = xml.IndexOf($"<{name}>", StringComparison.Ordinal);
        var close = open < 0 ? -1 : xml.IndexOf($"</{name}>", open, StringComparison.Ordinal);
        return close < 0 ? null : WebUtility.HtmlDecode(xml[(open + name.Length + 2)..close]);
    }
}

/// <summary>
/// What a HEAD or GET said of a stored object: its ETag as the store sent it, when it was written, its user metadata,
/// how many bytes it holds, and the store's own time when it answered.
/// </summary>
internal sealed class StoredHead(string? etag, DateTimeOffset? lastModified, Dictionary<string, string> metadata, long? size = null, DateTimeOffset? storeDate = null)
{
    public string? ETag { get; } = etag;

    /// <summary>When the store wrote the object, by the store's clock.</summary>
    public DateTimeOffset? LastModified { get; } = lastModified;

    /// <summary>
    /// The object's whole length as the store said it (not the range read): what an entry's metadata says of it can be
    /// false (a lost tail, another writer's bytes under the same metadata). Null when the answer did not say.
    /// </summary>
    public long? Size { get; } = size;

    /// <summary>How the object fails to hold a body of <paramref name="length"/> bytes, for the eviction's log line; null when it holds as many (or the store did not say).</summary>
    public string? SizeMismatch(long length) =>
        Size is { } size && size != length ? $"the store holds {size} bytes under it, its metadata says {length}" : null;

    /// <summary>The answer's Date: the store's clock at the time, which its Last-Modified is on too. Null when it sent none.</summary>
    public DateTimeOffset? StoreDate { get; } = storeDate;

    /// <summary>The value of one user metadata header (its whole name, x-amz-meta-…), or null.</summary>
    public string? Metadata(string name) => metadata.GetValueOrDefault(name);
}

/// <summary>
/// A stored object opened for reading: its head and the body bytes asked for (<see cref="From"/> through
/// <see cref="To"/>, inclusive), read straight from the store's connection. Disposing it before the body is read to
/// its end closes that connection.
/// </summary>
internal sealed class StoredObject(StoredHead head, Stream body, long from, long to, HttpResponseMessage response) : IDisposable
{
    private int _claimed;

    public StoredHead Head { get; } = head;

    public Stream Body { get; } = body;

    public long From { get; } = from;

    public long To { get; } = to;

    public string? ETag => Head.ETag;

    /// <summary>True for the one reader of the body; any later one opens the object again.</summary>
    public bool Claim() => Interlocked.Exchange(ref _claimed, 1) == 0;

    public void Dispose() => response.Dispose();
}
