using System.Net;
using System.Net.Http.Headers;

namespace Sidekick.Caching;

/// <summary>
/// HEAD requests to the store, signed here (<see cref="SigV4"/>) and sent on their own HTTP client, not through the
/// AWS SDK. Every cacheable request starts with one (its lookup; on stores that ignore <c>If-None-Match</c> a miss
/// reads its lease too), and the SDK's pipeline of some fifteen async handlers cost ~250 µs of CPU per HEAD and
/// 2-4 ms before a 64 MiB miss's first byte on the bench machine, where s3rver answers a HEAD in under 1 ms.
/// Everything else (GET, PUT, the multipart uploads, listings) stays with the SDK. A HEAD that fails on the way or
/// gets a 5xx is tried once more, as the SDK's one retry did.
/// </summary>
internal sealed class StoreHeads
{
    private readonly HttpClient _client;
    private readonly TimeProvider _time;
    private readonly SigV4 _signer;
    // Where every object's URL starts, worked out once: the Host each HEAD is signed and sent with (the bucket's own
    // name in it when virtual-hosted), and the encoded path before the key (the bucket's name when path-style).
    private readonly string _host;
    private readonly string _origin;
    private readonly string _pathPrefix;

    public StoreHeads(CacheOptions options, HttpClient client, TimeProvider time)
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
    }

    /// <summary>The object's head, or null when the store has no such object.</summary>
    public async Task<StoredHead?> HeadAsync(string key, CancellationToken cancellationToken)
    {
        try
        {
            return await SendAsync(key, cancellationToken);
        }
        catch (HttpRequestException ex) when (ex.StatusCode is null or >= HttpStatusCode.InternalServerError && !cancellationToken.IsCancellationRequested)
        {
            return await SendAsync(key, cancellationToken);
        }
    }

    private async Task<StoredHead?> SendAsync(string key, CancellationToken cancellationToken)
    {
        var path = _pathPrefix + SigV4.EncodePath(key);
        var signed = _signer.Sign("HEAD", _host, path, _time.GetUtcNow());
        using var request = new HttpRequestMessage(HttpMethod.Head, new Uri(_origin + path));
        request.Headers.Host = _host;
        request.Headers.TryAddWithoutValidation("Authorization", signed.Authorization);
        request.Headers.TryAddWithoutValidation("x-amz-date", signed.AmzDate);
        request.Headers.TryAddWithoutValidation("x-amz-content-sha256", signed.ContentSha256);
        using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        if (response.StatusCode == HttpStatusCode.NotFound ||
            (response.Headers.TryGetValues(StoreHttpClients.AbsentAsAnswer.AbsentMetadata, out var marks) && marks.Contains(StoreHttpClients.AbsentAsAnswer.AbsentMark)))
        {
            return null;
        }

        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"the store answered HEAD of {key} with {(int)response.StatusCode} {response.ReasonPhrase}", null, response.StatusCode);
        }

        var metadata = response.Headers.Where(h => h.Key.StartsWith("x-amz-meta-", StringComparison.OrdinalIgnoreCase))
            .ToDictionary(h => h.Key, h => h.Value.First(), StringComparer.OrdinalIgnoreCase);
        return new StoredHead(Single(response.Headers, "ETag"), response.Content.Headers.LastModified, metadata);
    }

    private static string? Single(HttpResponseHeaders headers, string name) =>
        headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;
}

/// <summary>What a HEAD said of a stored object: its ETag as the store sent it, when it was written, its user metadata.</summary>
internal sealed class StoredHead(string? etag, DateTimeOffset? lastModified, Dictionary<string, string> metadata)
{
    public string? ETag { get; } = etag;

    public DateTimeOffset? LastModified { get; } = lastModified;

    /// <summary>The value of one user metadata header (its whole name, x-amz-meta-…), or null.</summary>
    public string? Metadata(string name) => metadata.GetValueOrDefault(name);
}
