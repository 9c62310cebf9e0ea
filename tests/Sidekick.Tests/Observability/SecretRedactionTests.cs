using System.Text.Json;
using Sidekick.Cli;
using Sidekick.Observability;

namespace Sidekick.Tests.Observability;

/// <summary>The credential rule: names stay in place, values become REDACTED, everything else byte for byte.</summary>
public sealed class SecretRedactionTests
{
    private const string Presigned =
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request" +
        "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLETOKEN" +
        "&X-Amz-SignedHeaders=host&X-Amz-Signature=0123456789abcdef0123456789abcdef";

    [Theory]
    [InlineData(Presigned,
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900" +
        "&X-Amz-Security-Token=REDACTED&X-Amz-SignedHeaders=host&X-Amz-Signature=REDACTED")]
    // SigV2 presigned URL.
    [InlineData("AWSAccessKeyId=AKIAEXAMPLE&Expires=1700000000&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
        "AWSAccessKeyId=REDACTED&Expires=1700000000&Signature=REDACTED")]
    // Names compare case-insensitively and keep their spelling.
    [InlineData("x-amz-signature=abc&SIGNATURE=def&awsaccesskeyid=ghi", "x-amz-signature=REDACTED&SIGNATURE=REDACTED&awsaccesskeyid=REDACTED")]
    // A percent-encoded name is the same parameter to the server.
    [InlineData("X%2DAmz%2DSignature=abc&%53ignature=def", "X%2DAmz%2DSignature=REDACTED&%53ignature=REDACTED")]
    // ';' separates parameters for some servers, so it does here.
    [InlineData("a=1;X-Amz-Signature=abc;b=2", "a=1;X-Amz-Signature=REDACTED;b=2")]
    // Values that merely contain a name, names that merely end in one, and bare names are left alone.
    [InlineData("prefix=X-Amz-Signature%3Dx&MySignature=1&Signature&versionId=1", "prefix=X-Amz-Signature%3Dx&MySignature=1&Signature&versionId=1")]
    // Repeated parameters, empty values and empty parameters.
    [InlineData("Signature=a&Signature=&&x=1&", "Signature=REDACTED&Signature=REDACTED&&x=1&")]
    [InlineData("", "")]
    [InlineData("versionId=3&uploads", "versionId=3&uploads")]
    // Google Cloud Storage's signed URLs and Azure's SAS: the names the cache takes for credentials.
    [InlineData("X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam%2F20260101%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Signature=0123ab&X-Goog-Security-Token=tok",
        "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=REDACTED&X-Goog-Signature=REDACTED&X-Goog-Security-Token=REDACTED")]
    [InlineData("sv=2022-11-02&se=2026-01-01T00%3A00%3A00Z&sp=r&SIG=abc%3D&%73ig=def", "sv=2022-11-02&se=2026-01-01T00%3A00%3A00Z&sp=r&SIG=REDACTED&%73ig=REDACTED")]
    [InlineData("sigma=1&design=2", "sigma=1&design=2")]
    public void Query_values_of_signing_parameters_are_redacted(string query, string expected) =>
        Assert.Equal(expected, SecretRedaction.Query(query));

    [Fact]
    public void A_query_without_candidates_is_returned_as_is()
    {
        const string query = "list-type=2&prefix=a%2Fb&max-keys=1000";
        Assert.Same(query, SecretRedaction.Query(query));
        const string plain = "versionId=1";
        Assert.Same(plain, SecretRedaction.Query(plain));
    }

    [Theory]
    [InlineData("Authorization", "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=abc")]
    [InlineData("authorization", "Basic dXNlcjpwYXNz")]
    [InlineData("Proxy-Authorization", "Basic dXNlcjpwYXNz")]
    [InlineData("Cookie", "session=s3cr3t; theme=dark")]
    [InlineData("Set-Cookie", "session=s3cr3t; Path=/; HttpOnly")]
    [InlineData("X-Amz-Security-Token", "FwoGZXIvYXdzEXAMPLETOKEN")]
    [InlineData("x-amz-server-side-encryption-customer-key", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")]
    [InlineData("X-Auth-Token", "AUTH_tk0123")]
    public void Credential_headers_lose_their_whole_value(string name, string value)
    {
        Assert.True(SecretRedaction.IsSecretHeader(name));
        Assert.Equal("REDACTED", SecretRedaction.HeaderValue(name, value));
    }

    [Theory]
    [InlineData("Location", "https://s3.example.com/b/k?X-Amz-Credential=AKIA%2Fx&X-Amz-Signature=abc",
        "https://s3.example.com/b/k?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED")]
    [InlineData("Referer", "http://app/page?Signature=abc&AWSAccessKeyId=AKIA#top", "http://app/page?Signature=REDACTED&AWSAccessKeyId=REDACTED#top")]
    [InlineData("Content-Type", "text/plain", "text/plain")]
    [InlineData("X-Amz-SignedHeaders-Note", "X-Amz-Signature", "X-Amz-Signature")]
    public void Other_headers_keep_their_value_but_not_a_signing_parameter_in_it(string name, string value, string expected) =>
        Assert.Equal(expected, SecretRedaction.HeaderValue(name, value));

    [Theory]
    [InlineData("probe http://m1:9000/health?X-Amz-Signature=abc&x=1 failed: connection refused",
        "probe http://m1:9000/health?X-Amz-Signature=REDACTED&x=1 failed: connection refused")]
    [InlineData("probe http://m1:9000/health?Signature=abc timed out after 10s", "probe http://m1:9000/health?Signature=REDACTED timed out after 10s")]
    [InlineData("\"X-Amz-Credential=abc\"", "\"X-Amz-Credential=REDACTED\"")]
    [InlineData("connection refused", "connection refused")]
    [InlineData("MySignature=abc Signature", "MySignature=abc Signature")]
    [InlineData("ends with Signature=", "ends with Signature=REDACTED")]
    // A percent-encoded name is the same parameter to the server, in text as in a query.
    [InlineData("probe http://m1:9000/b/k?X-Amz-Signatur%65=abc&x=1 failed", "probe http://m1:9000/b/k?X-Amz-Signatur%65=REDACTED&x=1 failed")]
    [InlineData("Location: /k?%58-Amz-Credential=AKIA%2Fx;X%2DAmz%2DSecurity%2DToken=tok", "Location: /k?%58-Amz-Credential=REDACTED;X%2DAmz%2DSecurity%2DToken=REDACTED")]
    [InlineData("100% done, a=%41&b=1", "100% done, a=%41&b=1")]
    [InlineData("https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=abc%3D and X-Goog-Signature=0123",
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=REDACTED and X-Goog-Signature=REDACTED")]
    // A URL's user information goes whole: a user alone may be a token.
    [InlineData("endpoint \"http://minio:pa55w0rd@m1:9000\" must not carry credentials", "endpoint \"http://REDACTED@m1:9000\" must not carry credentials")]
    [InlineData("a http://u:p@h/x@y b https://v:q:r@[::1]:1?z=@ c", "a http://REDACTED@h/x@y b https://REDACTED@[::1]:1?z=@ c")]
    [InlineData("http://user@h:1 and http://h/p@q and mailto:a@b", "http://REDACTED@h:1 and http://h/p@q and mailto:a@b")]
    [InlineData("probe of https://ghp_0123456789abcdef@git.example.com/x failed", "probe of https://REDACTED@git.example.com/x failed")]
    // A password typed as is, with the characters that end an authority: up to the last '@' before the host.
    [InlineData("endpoint \"http://minio:pa/ss@m1:9000/b\" is invalid", "endpoint \"http://REDACTED@m1:9000/b\" is invalid")]
    [InlineData("http://minio:p?a#s/s@m1:9000", "http://REDACTED@m1:9000")]
    [InlineData("'http://minio:my secret pass@m1:9000' and 'x@y'", "'http://REDACTED@m1:9000' and 'x@y'")]
    [InlineData("http://u:a/b@h1 then http://v:c d@h2/k@z", "http://REDACTED@h1 then http://REDACTED@z")]
    // After a host and port the path is a path, also at the end of a sentence.
    [InlineData("http://h:9000/p@q, http://[::1]:1/r@s and http://h:9000. mail a@b", "http://h:9000/p@q, http://[::1]:1/r@s and http://h:9000. mail a@b")]
    public void Text_loses_the_values_of_signing_parameters(string text, string expected) =>
        Assert.Equal(expected, SecretRedaction.Text(text));

    [Fact]
    public void The_output_redacts_every_parameter_the_cache_takes_for_a_credential()
    {
        foreach (var name in Sidekick.Security.CredentialParameters.Names)
        {
            Assert.True(Sidekick.Caching.CachePolicy.IsCredentialParameter(name));
            Assert.Equal($"a=1&{name}=REDACTED", SecretRedaction.Query($"a=1&{name}=secret"));
            Assert.Equal($"see /k?{name}=REDACTED now", SecretRedaction.Text($"see /k?{name}=secret now"));
        }

        Assert.Contains("X-Goog-Security-Token", Sidekick.Security.CredentialParameters.Names);
    }

    [Fact]
    public void An_s3_signature_error_body_loses_the_signature_material()
    {
        const string body =
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message>" +
            "<AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256\n20260101T000000Z</StringToSign>" +
            "<SignatureProvided>0123abcd</SignatureProvided><CanonicalRequest>GET\n/b/k\nX-Amz-Credential=AKIA%2Fx&amp;X-Amz-Security-Token=TOKEN\n" +
            "x-amz-security-token:TOKEN\n</CanonicalRequest><RequestId>4442587FB7D0A2F9</RequestId></Error>";
        Assert.Equal(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message>" +
            "<AWSAccessKeyId>REDACTED</AWSAccessKeyId><StringToSign>REDACTED</StringToSign>" +
            "<SignatureProvided>REDACTED</SignatureProvided><CanonicalRequest>REDACTED</CanonicalRequest><RequestId>4442587FB7D0A2F9</RequestId></Error>",
            SecretRedaction.ErrorBody(body));
        // A body cut inside an element (the capture keeps at most 64 KiB) loses the rest.
        Assert.Equal("<Error><SignatureProvided>REDACTED", SecretRedaction.ErrorBody("<Error><SignatureProvided>0123ab"));
    }

    private static readonly TraceRecord Record = new()
    {
        IsProbe = false,
        Host = "http://minio2:9000",
        Time = new DateTime(2026, 1, 1, 12, 0, 0, 123, DateTimeKind.Utc),
        Client = "127.0.0.1",
        StatusCode = 403,
        Method = "GET",
        Path = "/bucket/obj",
        Query = "versionId=1&X-Amz-Signature=abc",
        ProbeUrl = "http://minio2:9000/minio/health/ready",
        RequestHeaders = [new("Authorization", ["AWS4-HMAC-SHA256 Signature=abc"]), new("Cookie", ["a=1", "b=2"]), new("Host", ["minio2"])],
        ResponseHeaders = [new("Set-Cookie", ["s=1"]), new("Location", ["/x?Signature=abc"])],
        ResponseBody = "<Error><SignatureProvided>abc</SignatureProvided></Error>",
    };

    private static ConsoleMode Mode(bool json, bool debug) => new(true, false, false, json, debug);

    [Fact]
    public void Every_trace_shape_prints_the_redacted_forms()
    {
        Assert.Contains(" GET /bucket/obj?versionId=1&X-Amz-Signature=REDACTED 127.0.0.1 ", new TraceFormatter(Mode(false, false)).Format(Record), StringComparison.Ordinal);

        var debug = new TraceFormatter(Mode(false, true)).Format(Record);
        Assert.Contains("DEBUG: http://minio2:9000 GET /bucket/obj?versionId=1&X-Amz-Signature=REDACTED\n", debug, StringComparison.Ordinal);
        Assert.Contains("DEBUG: http://minio2:9000 Authorization: REDACTED\n", debug, StringComparison.Ordinal);
        Assert.Contains("DEBUG: http://minio2:9000 Cookie: REDACTEDREDACTED\n", debug, StringComparison.Ordinal);
        Assert.Contains("DEBUG: http://minio2:9000 Host: minio2\n", debug, StringComparison.Ordinal);
        Assert.Contains("DEBUG: http://minio2:9000 Set-Cookie: REDACTED\n", debug, StringComparison.Ordinal);
        Assert.Contains("DEBUG: http://minio2:9000 Location: /x?Signature=REDACTED\n", debug, StringComparison.Ordinal);
        Assert.Contains("DEBUG: http://minio2:9000 <Error><SignatureProvided>REDACTED</SignatureProvided></Error>\n", debug, StringComparison.Ordinal);

        var shortJson = JsonDocument.Parse(new TraceFormatter(Mode(true, false)).Format(Record)).RootElement;
        Assert.Equal("versionId=1&X-Amz-Signature=REDACTED", shortJson.GetProperty("query").GetString());

        var full = JsonDocument.Parse(new TraceFormatter(Mode(true, true)).Format(Record)).RootElement;
        Assert.Equal("versionId=1&X-Amz-Signature=REDACTED", full.GetProperty("request").GetProperty("rawquery").GetString());
        var requestHeaders = full.GetProperty("request").GetProperty("headers");
        Assert.Equal("REDACTED", requestHeaders.GetProperty("Authorization")[0].GetString());
        Assert.Equal(["REDACTED", "REDACTED"], requestHeaders.GetProperty("Cookie").EnumerateArray().Select(v => v.GetString()));
        Assert.Equal("REDACTED", full.GetProperty("response").GetProperty("headers").GetProperty("Set-Cookie")[0].GetString());
        Assert.Equal("/x?Signature=REDACTED", full.GetProperty("response").GetProperty("headers").GetProperty("Location")[0].GetString());
        Assert.Equal("<Error><SignatureProvided>REDACTED</SignatureProvided></Error>", full.GetProperty("response").GetProperty("body").GetString());
    }
}
