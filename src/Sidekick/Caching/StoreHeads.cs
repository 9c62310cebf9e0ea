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
internal sealed class StoreHeads(CacheOptions options, HttpClient client, TimeProvider time)
{
    private readonly SigV4 _signer = new(options.AccessKey, options.SecretKey, options.Region);

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
        var (uri, host, path) = Address(key);
        var signed = _signer.Sign("HEAD", host, path, time.GetUtcNow());
        using var request = new HttpRequestMessage(HttpMethod.Head, uri);
        request.Headers.Host = host;
        request.Headers.TryAddWithoutValidation("Authorization", signed.Authorization);
        request.Headers.TryAddWithoutValidation("x-amz-date", signed.AmzDate);
        request.Headers.TryAddWithoutValidation("x-amz-content-sha256", signed.ContentSha256);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
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

    /// <summary>The object's URL, the Host it is signed and sent with, and its encoded path: path-style or virtual-hosted.</summary>
    private (Uri Uri, string Host, string Path) Address(string key)
    {
        var endpoint = options.Endpoint;
        var basePath = endpoint.AbsolutePath.TrimEnd('/');
        var hostName = options.PathStyle ? endpoint.Host : $"{options.Bucket}.{endpoint.Host}";
        var host = endpoint.IsDefaultPort ? hostName : $"{hostName}:{endpoint.Port}";
        var path = SigV4.EncodePath(options.PathStyle ? $"{basePath}/{options.Bucket}/{key}" : $"{basePath}/{key}");
        return (new Uri($"{endpoint.Scheme}://{host}{path}"), host, path);
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
