using System.Net;
using System.Net.Http.Headers;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Sidekick.Caching;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Caching;

/// <summary>
/// The store's reads (HEAD and GET) are signed without the AWS SDK: the signature is AWS's own worked example, and a
/// store that checks signatures answers them, and refuses one made with the wrong secret.
/// </summary>
public sealed class StoreRequestsTests
{
    [Fact]
    public void The_signature_is_the_one_of_the_S3_documentation_example()
    {
        // "Signature Calculations for the Authorization Header", Amazon S3 API reference: Example: GET Object.
        var signer = new SigV4("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1");

        var signed = signer.Sign("GET", "examplebucket.s3.amazonaws.com", "/test.txt", new DateTimeOffset(2013, 5, 24, 0, 0, 0, TimeSpan.Zero), ("range", "bytes=0-9"));

        Assert.Equal(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " +
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            signed.Authorization);
        Assert.Equal("20130524T000000Z", signed.AmzDate);
    }

    [Fact]
    public void A_key_is_encoded_byte_by_byte_but_for_the_unreserved_characters_and_slashes()
    {
        Assert.Equal("/cache/a%20b%2Bc/%C3%A9~_-.x", SigV4.EncodePath("/cache/a b+c/é~_-.x"));
    }

    [Fact]
    public async Task A_store_that_checks_signatures_answers_the_reads_and_refuses_one_signed_with_the_wrong_secret()
    {
        var work = Directory.CreateTempSubdirectory("sidekick-heads").FullName;
        try
        {
            await using var s3 = await S3rverProcess.StartVerifyingAsync(Path.Combine(work, "data"), "cache");
            var key = "entries/a b+c";
            using (var client = new AmazonS3Client(
                new BasicAWSCredentials(S3rverProcess.AccessKey, S3rverProcess.SecretKey),
                new AmazonS3Config { ServiceURL = s3.Url.ToString(), ForcePathStyle = true, AuthenticationRegion = "us-east-1" }))
            {
                var put = new PutObjectRequest { BucketName = "cache", Key = key, ContentBody = "x", UseChunkEncoding = false };
                put.Metadata[S3CacheStore.VaryMetadata] = "accept";
                put.Metadata[S3CacheStore.LeaseMetadata] = "lease-text";
                await client.PutObjectAsync(put);
            }

            using var http = new HttpClient();
            var options = new CacheOptions { Endpoint = s3.Url, AccessKey = S3rverProcess.AccessKey, SecretKey = S3rverProcess.SecretKey, Bucket = "cache" };
            var heads = new StoreRequests(options, http, TimeProvider.System);

            var found = await heads.HeadAsync(key, default);
            Assert.NotNull(found);
            Assert.Equal("accept", found.Metadata(S3CacheStore.VaryMetadata));
            Assert.Equal("lease-text", found.Metadata(S3CacheStore.LeaseMetadata));
            Assert.Null(found.Metadata(S3CacheStore.EntryMetadata));
            Assert.Equal("\"9dd4e461268c8034f5c8564e155c67a6\"", found.ETag); // MD5 of "x", quoted as S3 sends it
            Assert.NotNull(found.LastModified);
            Assert.Null(await heads.HeadAsync("entries/absent", default));

            var forged = new StoreRequests(options with { SecretKey = "not-the-secret" }, http, TimeProvider.System);
            var refused = await Assert.ThrowsAsync<HttpRequestException>(() => forged.HeadAsync(key, default));
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.True(S3CacheStore.IsStoreError(refused));
            Assert.Equal(CacheStoreFailureReason.CredentialsRejected, CacheStoreFailure.Of(refused).Reason); // as /v1/state and the metric name it

            // A GET: the whole object with its head, a range of it, nothing for an absent key.
            using (var whole = await heads.GetAsync(key, range: null, default))
            {
                Assert.NotNull(whole);
                Assert.Equal("accept", whole.Head.Metadata(S3CacheStore.VaryMetadata));
                Assert.Equal(found.ETag, whole.ETag);
                Assert.Equal("x", await new StreamReader(whole.Body).ReadToEndAsync());
            }

            using (var put = new AmazonS3Client(
                new BasicAWSCredentials(S3rverProcess.AccessKey, S3rverProcess.SecretKey),
                new AmazonS3Config { ServiceURL = s3.Url.ToString(), ForcePathStyle = true, AuthenticationRegion = "us-east-1" }))
            {
                await put.PutObjectAsync(new PutObjectRequest { BucketName = "cache", Key = "entries/digits", ContentBody = "0123456789", UseChunkEncoding = false });
            }

            using (var part = await heads.GetAsync("entries/digits", new RangeItemHeaderValue(3, 6), default))
            {
                Assert.NotNull(part);
                Assert.Equal((3, 6), (part.From, part.To));
                Assert.Equal("3456", await new StreamReader(part.Body).ReadToEndAsync());
            }

            using (var rest = await heads.GetAsync("entries/digits", new RangeItemHeaderValue(7, null), default))
            {
                Assert.NotNull(rest);
                Assert.Equal((7, 9), (rest.From, rest.To));
                Assert.Equal("789", await new StreamReader(rest.Body).ReadToEndAsync());
            }

            var past = await Assert.ThrowsAsync<AmazonS3Exception>(() => heads.GetAsync("entries/digits", new RangeItemHeaderValue(20, 30), default));
            Assert.Equal(HttpStatusCode.RequestedRangeNotSatisfiable, past.StatusCode);

            Assert.Null(await heads.GetAsync("entries/absent", range: null, default));
            var forgedGet = await Assert.ThrowsAsync<AmazonS3Exception>(() => forged.GetAsync(key, range: null, default));
            Assert.Equal(HttpStatusCode.Forbidden, forgedGet.StatusCode);
            Assert.Equal("SignatureDoesNotMatch", forgedGet.ErrorCode);
            Assert.Equal(CacheStoreFailureReason.CredentialsRejected, CacheStoreFailure.Of(forgedGet).Reason);
            var noBucket = new StoreRequests(options with { Bucket = "no-such-bucket" }, http, TimeProvider.System);
            var missing = await Assert.ThrowsAsync<AmazonS3Exception>(() => noBucket.GetAsync(key, range: null, default));
            Assert.Equal(CacheStoreFailureReason.BucketMissing, CacheStoreFailure.Of(missing).Reason);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }
}
