using System.Security.Cryptography;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;
using Sidekick.Topology;

namespace Sidekick.Tests.Integration;

/// <summary>
/// The AWS SDK for .NET, signing normally, talks to sidekick, which balances over two s3rver processes
/// sharing one data directory. Every byte must come back identical, whatever the key looks like.
/// </summary>
public sealed class S3RoundTripTests
{
    private const string Bucket = "roundtrip";

    public static TheoryData<string> Keys => new()
    {
        "plain.bin",
        "with space/and more spaces.bin",
        "plus+sign+key.bin",
        "percent%20literal%2Fkey.bin",
        "unicode/€uro/日本語/ключ.bin",
        "deep/a/b/c/d/e.bin",
        "semi;colon=equals&amp.bin",
    };

    [Theory]
    [MemberData(nameof(Keys))]
    public async Task Put_head_range_get_delete_through_sidekick(string key)
    {
        var data = Directory.CreateTempSubdirectory("s3rt").FullName;
        await using var node1 = await S3rverProcess.StartAsync(data, Bucket);
        await using var node2 = await S3rverProcess.StartAsync(data);
        var options = Integration.SidekickHarness.FastOptions with { HealthPath = "/", ReadHealthPath = "/" };
        var definitions = new[]
        {
            new SiteDefinition(1, [Definition(node1.Url), Definition(node2.Url)]),
        };
        await using var sidekick = SidekickServer.Create(options, () => definitions);
        await sidekick.StartAsync();
        await WaitAsync(() => sidekick.Topology.Current.AllBackends.All(b => b.IsUp));

        using var s3 = new AmazonS3Client(
            new BasicAWSCredentials(S3rverProcess.AccessKey, S3rverProcess.SecretKey),
            new AmazonS3Config
            {
                ServiceURL = sidekick.BaseAddress.ToString(),
                ForcePathStyle = true,
                AuthenticationRegion = "us-east-1",
                RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
                ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            });

        // Single PUT.
        var small = RandomNumberGenerator.GetBytes(300_000);
        await s3.PutObjectAsync(new PutObjectRequest
        {
            BucketName = Bucket, Key = key, InputStream = new MemoryStream(small), UseChunkEncoding = false,
        });
        Assert.Equal(small, await GetAsync(s3, key));

        var head = await s3.GetObjectMetadataAsync(Bucket, key);
        Assert.Equal(small.Length, head.ContentLength);

        using (var ranged = await s3.GetObjectAsync(new GetObjectRequest { BucketName = Bucket, Key = key, ByteRange = new ByteRange(1000, 1999) }))
        {
            using var buffer = new MemoryStream();
            await ranged.ResponseStream.CopyToAsync(buffer);
            Assert.Equal(small.AsSpan(1000, 1000).ToArray(), buffer.ToArray());
        }

        // Multipart PUT: two 5 MiB parts and a short one.
        var multipartKey = key + ".multipart";
        var large = RandomNumberGenerator.GetBytes((10 * 1024 * 1024) + 12345);
        var upload = await s3.InitiateMultipartUploadAsync(Bucket, multipartKey);
        var parts = new List<PartETag>();
        const int partSize = 5 * 1024 * 1024;
        for (int offset = 0, number = 1; offset < large.Length; offset += partSize, number++)
        {
            var length = Math.Min(partSize, large.Length - offset);
            var part = await s3.UploadPartAsync(new UploadPartRequest
            {
                BucketName = Bucket, Key = multipartKey, UploadId = upload.UploadId, PartNumber = number,
                InputStream = new MemoryStream(large, offset, length), PartSize = length, UseChunkEncoding = false,
            });
            parts.Add(new PartETag(number, part.ETag));
        }

        await s3.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest
        {
            BucketName = Bucket, Key = multipartKey, UploadId = upload.UploadId, PartETags = parts,
        });
        Assert.Equal(SHA256.HashData(large), SHA256.HashData(await GetAsync(s3, multipartKey)));

        // Every exchange above went through a backend (calls count proxied requests only: probes are counted apart,
        // and sequential requests may all go to one node), and deletes go through.
        Assert.True(sidekick.Topology.Current.AllBackends.Sum(b => b.Stats.Calls) >= 9,
            $"calls: {string.Join(", ", sidekick.Topology.Current.AllBackends.Select(b => b.Stats.Calls))}");
        await s3.DeleteObjectAsync(Bucket, key);
        await s3.DeleteObjectAsync(Bucket, multipartKey);
        var missing = await Assert.ThrowsAsync<AmazonS3Exception>(() => s3.GetObjectMetadataAsync(Bucket, key));
        Assert.Equal(System.Net.HttpStatusCode.NotFound, missing.StatusCode);
        await sidekick.StopAsync();
    }

    private static BackendDefinition Definition(Uri url)
    {
        var text = url.ToString().TrimEnd('/');
        return new BackendDefinition(url, text, new Uri(text + "/"));
    }

    private static async Task<byte[]> GetAsync(AmazonS3Client s3, string key)
    {
        using var response = await s3.GetObjectAsync(Bucket, key);
        using var buffer = new MemoryStream();
        await response.ResponseStream.CopyToAsync(buffer);
        return buffer.ToArray();
    }

    private static async Task WaitAsync(Func<bool> condition)
    {
        var deadline = Environment.TickCount64 + 15000;
        while (!condition())
        {
            Assert.True(Environment.TickCount64 < deadline, "timed out");
            await Task.Delay(25);
        }
    }
}
