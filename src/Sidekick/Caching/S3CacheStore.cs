using System.Net;
using System.Net.Http.Headers;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;

namespace Sidekick.Caching;

/// <summary>
/// The bucket holding the cache, through the AWS SDK (works with any S3-compatible store). Entries are
/// objects whose user metadata carries the <see cref="CachedResponse"/>; Vary markers are empty objects
/// naming the Vary headers. Uploads never use aws-chunked framing (some S3 emulators store it verbatim).
/// </summary>
internal sealed class S3CacheStore : IDisposable
{
    public const string EntryMetadata = "x-amz-meta-sidekick";
    public const string VaryMetadata = "x-amz-meta-sidekick-vary";
    public const string LeaseMetadata = "x-amz-meta-sidekick-lease";

    /// <summary>The largest object S3 copies in one request (CopyObject); a larger one would need a multipart copy.</summary>
    public const long MaxCopyBytes = 5L * 1024 * 1024 * 1024;

    private readonly AmazonS3Client _s3;
    private readonly HttpClient _readClient;
    // Reads (lookups, lease reads, stored bodies) and metadata copies are signed and sent without the SDK: see StoreRequests.
    private readonly StoreRequests _requests;

    /// <summary>What a store call throws when the store is down, slow or refuses: never the client's problem.</summary>
    public static bool IsStoreError(Exception ex) =>
        ex is OperationCanceledException or AmazonServiceException or AmazonClientException or HttpRequestException or IOException or TimeoutException;
    private readonly string _bucket;
    // "<namespace>/" before every object's name (see CacheNamespace); empty only for a store built without one.
    private readonly string _folder;
    // Over TLS a body's integrity in transit is TLS's job: its SHA-256 for the signature (a second pass over every
    // byte filled, about a third of a CPU second per GiB) is skipped. The SDK allows that only over HTTPS.
    private readonly bool _tls;

    public Uri Endpoint { get; }

    public string Bucket => _bucket;

    /// <summary>The configured access key: a store's error text may echo it, and it is redacted there (not a secret, but it names the account).</summary>
    public string AccessKey { get; }

    public S3CacheStore(CacheOptions options)
    {
        AccessKey = options.AccessKey;
        _bucket = options.Bucket;
        _folder = options.Namespace is { } ns ? ns + "/" : "";
        Endpoint = options.Endpoint;
        _tls = options.Endpoint.Scheme == Uri.UriSchemeHttps;
        var config = new AmazonS3Config
        {
            ServiceURL = options.Endpoint.ToString(),
            ForcePathStyle = options.PathStyle,
            AuthenticationRegion = options.Region,
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            MaxErrorRetry = 1,
            Timeout = TimeSpan.FromMinutes(5),
            // What the HTTP client reads from an upload's body at a time, and sends: at the SDK's 8 KiB a 1 GiB fill
            // made ~130,000 sends, each a wake-up of the socket engine.
            BufferSize = SpoolSlice.ReadAhead,
            HttpClientFactory = new StoreHttpClients(),
        };
        _s3 = new AmazonS3Client(new BasicAWSCredentials(options.AccessKey, options.SecretKey), config);
        _readClient = config.HttpClientFactory.CreateHttpClient(config); // the SDK's own settings, its own connections
        _requests = new StoreRequests(options, _readClient, TimeProvider.System);
    }

    /// <summary>Metadata of an object and the store's ETag of it, or null when it does not exist.</summary>
    public async Task<(CachedResponse? Entry, string? VaryNames, string? StoreETag)?> HeadAsync(string key, CancellationToken cancellationToken)
    {
        var head = await _requests.HeadAsync(Name(key), cancellationToken);
        return head is null ? null : (CachedResponse.Deserialize(head.Metadata(EntryMetadata)), head.Metadata(VaryMetadata), head.ETag);
    }

    /// <summary>
    /// An object's head, and with <paramref name="openBody"/> the object opened for reading in the same request (a GET
    /// instead of a HEAD, of <paramref name="range"/> when one is given, else of the whole object): a HIT then reads
    /// its body without a second round trip, and that body is the one its metadata describes. Null when it does not
    /// exist. A range the object does not hold (416: past its end, or any range of an empty object such as a Vary
    /// marker) is looked up again with a HEAD. The opened object is the caller's to dispose.
    /// </summary>
    public async Task<(StoredHead Head, StoredObject? Opened)?> LookAsync(string key, bool openBody, RangeItemHeaderValue? range, CancellationToken cancellationToken)
    {
        if (openBody)
        {
            try
            {
                return await _requests.GetAsync(Name(key), range, cancellationToken) is { } opened ? (opened.Head, opened) : null;
            }
            catch (AmazonS3Exception ex) when (range is not null && ex.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
            {
            }
        }

        return await _requests.HeadAsync(Name(key), cancellationToken) is { } head ? (head, null) : null;
    }

    /// <summary>Opens bytes <paramref name="from"/> through <paramref name="to"/> (inclusive) of a stored body; null when the object is gone.</summary>
    public Task<StoredObject?> OpenAsync(string key, long from, long to, CancellationToken cancellationToken) =>
        _requests.GetAsync(Name(key), new RangeItemHeaderValue(from, to), cancellationToken);

    /// <summary>
    /// Whether an opened body is the one <paramref name="entry"/> describes (same origin ETag and length in its
    /// metadata): another sidecar may have stored a newer version under the key since the entry was looked up.
    /// </summary>
    public static bool Holds(StoredObject opened, CachedResponse entry) =>
        opened.Head.Metadata(EntryMetadata) is { Length: > 0 } serialized && CachedResponse.Deserialize(serialized) is { } stored &&
        stored.ETag == entry.ETag && stored.Length == entry.Length;

    public Task PutAsync(string key, ReadOnlyMemory<byte> body, IReadOnlyDictionary<string, string> metadata, CancellationToken cancellationToken)
    {
        var request = new PutObjectRequest
        {
            BucketName = _bucket,
            Key = Name(key),
            InputStream = new MemoryStream(body.ToArray(), writable: false),
            UseChunkEncoding = false,
            AutoCloseStream = true,
        };
        foreach (var (name, value) in metadata)
        {
            request.Metadata[name] = value;
        }

        return _s3.PutObjectAsync(request, cancellationToken);
    }

    public async Task<string> BeginMultipartAsync(string key, IReadOnlyDictionary<string, string> metadata, CancellationToken cancellationToken)
    {
        var request = new InitiateMultipartUploadRequest { BucketName = _bucket, Key = Name(key) };
        foreach (var (name, value) in metadata)
        {
            request.Metadata[name] = value;
        }

        return (await _s3.InitiateMultipartUploadAsync(request, cancellationToken)).UploadId;
    }

    /// <summary>Uploads a part read from <paramref name="part"/> (seekable: the signer hashes it, then it is sent).</summary>
    public async Task<PartETag> UploadPartAsync(string key, string uploadId, int number, Stream part, CancellationToken cancellationToken)
    {
        var response = await _s3.UploadPartAsync(new UploadPartRequest
        {
            BucketName = _bucket, Key = Name(key), UploadId = uploadId, PartNumber = number,
            InputStream = part, PartSize = part.Length, UseChunkEncoding = false, DisablePayloadSigning = _tls,
        }, cancellationToken);
        return new PartETag(number, response.ETag);
    }

    /// <summary>Stores a whole body read from <paramref name="body"/> (seekable) in one PUT.</summary>
    public Task PutAsync(string key, Stream body, IReadOnlyDictionary<string, string> metadata, CancellationToken cancellationToken)
    {
        var request = new PutObjectRequest
        {
            BucketName = _bucket, Key = Name(key), InputStream = body, UseChunkEncoding = false, AutoCloseStream = false, DisablePayloadSigning = _tls,
        };
        foreach (var (name, value) in metadata)
        {
            request.Metadata[name] = value;
        }

        return _s3.PutObjectAsync(request, cancellationToken);
    }

    public Task CompleteMultipartAsync(string key, string uploadId, List<PartETag> parts, CancellationToken cancellationToken) =>
        _s3.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest { BucketName = _bucket, Key = Name(key), UploadId = uploadId, PartETags = parts }, cancellationToken);

    public Task AbortMultipartAsync(string key, string uploadId, CancellationToken cancellationToken = default) =>
        _s3.AbortMultipartUploadAsync(new AbortMultipartUploadRequest { BucketName = _bucket, Key = Name(key), UploadId = uploadId }, cancellationToken);

    /// <summary>
    /// Replaces an entry's metadata (after a 304 refreshed its headers) while the object is still the one
    /// <paramref name="storeETag"/> names (see <see cref="StoreRequests.ReplaceMetadataAsync"/>); false when it
    /// changed or is gone.
    /// </summary>
    public Task<bool> UpdateMetadataAsync(string key, string storeETag, IReadOnlyDictionary<string, string> metadata, CancellationToken cancellationToken) =>
        _requests.ReplaceMetadataAsync(Name(key), storeETag, metadata, cancellationToken);

    /// <summary>
    /// The fill lease at <paramref name="key"/>, when the store last wrote it (its Last-Modified, by the store's clock),
    /// and how long ago that was by the same clock (the answer's Date less the Last-Modified; null when the store sent
    /// no Date), or null when there is none.
    /// </summary>
    public async Task<(FillLease Lease, DateTimeOffset Written, TimeSpan? Age)?> ReadLeaseAsync(string key, CancellationToken cancellationToken)
    {
        var head = await _requests.HeadAsync(Name(key), cancellationToken);
        // Both times are whole seconds: a Date in the same second as the write may read as before it (zero, then).
        return head is not null && FillLease.Parse(head.Metadata(LeaseMetadata)) is { } lease && head.LastModified is { } written
            ? (lease, written.ToUniversalTime(), head.StoreDate is { } now ? TimeSpan.FromTicks(Math.Max(0, (now - written).Ticks)) : null)
            : null;
    }

    /// <summary>
    /// Writes a fill lease (an empty object). With <paramref name="onlyIfAbsent"/> it is a conditional create
    /// (<c>If-None-Match: *</c>); false when the store refused it because a lease exists (AWS S3 and MinIO honour
    /// the condition; stores that ignore it overwrite, which <see cref="FillLeases"/> checks by reading back).
    /// </summary>
    public async Task<bool> WriteLeaseAsync(string key, FillLease lease, bool onlyIfAbsent, CancellationToken cancellationToken)
    {
        var request = new PutObjectRequest { BucketName = _bucket, Key = Name(key), InputStream = new MemoryStream([], writable: false), UseChunkEncoding = false };
        request.Metadata[LeaseMetadata] = lease.ToString();
        if (onlyIfAbsent)
        {
            request.IfNoneMatch = "*";
        }

        try
        {
            await _s3.PutObjectAsync(request, cancellationToken);
            return true;
        }
        catch (AmazonS3Exception ex) when (onlyIfAbsent && ex.StatusCode is HttpStatusCode.PreconditionFailed or HttpStatusCode.Conflict)
        {
            return false;
        }
    }

    public Task DeleteAsync(string key, CancellationToken cancellationToken) => DeleteObjectAsync(Name(key), cancellationToken);

    /// <summary>Deletes an entry, its Vary marker and every variant stored under it.</summary>
    /// <summary>Names asked for per listing of an entry's variants: S3's largest page (tests ask for fewer).</summary>
    internal int VariantsListedAtOnce { get; init; } = 1000;

    public async Task DeleteEntryAsync(string key, CancellationToken cancellationToken)
    {
        // Until none is left: a response that varies on a field clients send many values of (User-Agent, Origin) can
        // have more than the 1,000 variants one listing returns, and a variant left behind would be served again. Each
        // listing starts over (what was deleted is gone from it), so no continuation is needed; the first version of
        // the listing, because s3rver fails every truncated one of the second (its continuation token needs DES,
        // which the OpenSSL 3 of current Node.js no longer offers).
        var request = new ListObjectsRequest { BucketName = _bucket, Prefix = Name(CacheKey.VariantPrefix(key)), MaxKeys = VariantsListedAtOnce };
        while (true)
        {
            var listing = await _s3.ListObjectsAsync(request, cancellationToken);
            var variants = listing.S3Objects ?? [];
            foreach (var variant in variants)
            {
                await DeleteObjectAsync(variant.Key, cancellationToken); // the listing names objects, folder included
            }

            if (listing.IsTruncated != true || variants.Count == 0)
            {
                break;
            }
        }

        await DeleteAsync(key, cancellationToken);
    }

    private Task<DeleteObjectResponse> DeleteObjectAsync(string name, CancellationToken cancellationToken) =>
        _s3.DeleteObjectAsync(new DeleteObjectRequest { BucketName = _bucket, Key = name }, cancellationToken);

    /// <summary>The object that holds <paramref name="key"/>: the key inside this sidecar's namespace.</summary>
    private string Name(string key) => _folder + key;

    /// <summary>
    /// One cheap request that proves the store answers, the credentials hold and the bucket exists: a GET of an object
    /// nobody writes, answered 404 NoSuchKey (NoSuchBucket, a 403 or a 5xx is the failure). Sent by sidekick itself, as
    /// every read is, so that at most a few KiB of the answer are read: the SDK's listing it replaces read a store's
    /// whole answer, and a broken or hostile store's endless body or megabytes of error text went into memory on every
    /// probe (1.7 GB within 14 s in a review). Needs what the cache needs anyway: s3:GetObject and s3:ListBucket (S3
    /// answers a missing key with 403 to a caller without the latter).
    /// </summary>
    public async Task ProbeAsync(CancellationToken cancellationToken)
    {
        using var found = await _requests.GetAsync("sidekick-health-probe/none", new RangeItemHeaderValue(0, 0), cancellationToken);
    }

    public void Dispose()
    {
        _s3.Dispose();
        _readClient.Dispose();
    }
}
