using System.Text.Json;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Observability;

/// <summary>
/// Hostile input for the credential rule, through the real process: presigned URLs (SigV4 and SigV2), an
/// Authorization header, cookies both ways, a session token header, a redirect to a presigned URL and an S3
/// signature error that echoes the signature, traced with --trace all and --log, in text and JSON, short and
/// --debug. None of the secret values may reach stdout or stderr; the names and the rest stay byte for byte.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class SecretsInOutputTests
{
    private static readonly string[] Secrets =
    [
        "AKIAQUERYCREDENTIAL", "QUERYSESSIONTOKEN", "0123456789querysignature", "AKIASIGV2KEY", "sigv2signature",
        "AKIAHEADERCREDENTIAL", "headersignature9876", "requestcookie42", "HEADERSESSIONTOKEN", "responsecookie42",
        "locationsignature55", "echoedsignature77", "AKIAECHOEDKEY",
    ];

    private const string PresignedQuery =
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAQUERYCREDENTIAL%2F20260101%2Fus-east-1%2Fs3%2Faws4_request" +
        "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-Security-Token=QUERYSESSIONTOKEN&X-Amz-SignedHeaders=host" +
        "&X-Amz-Signature=0123456789querysignature";

    private const string RedactedPresignedQuery =
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900" +
        "&X-Amz-Security-Token=REDACTED&X-Amz-SignedHeaders=host&X-Amz-Signature=REDACTED";

    private const string SigV2Query = "AWSAccessKeyId=AKIASIGV2KEY&Expires=1700000000&Signature=sigv2signature";

    private static RawResponse Respond(RawRequest request)
    {
        if (request.Target.StartsWith("/denied", StringComparison.Ordinal))
        {
            const string body = "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIAECHOEDKEY</AWSAccessKeyId>" +
                                "<SignatureProvided>echoedsignature77</SignatureProvided><RequestId>42</RequestId></Error>";
            return RawResponse.Text($"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {body.Length}\r\n\r\n{body}");
        }

        return RawResponse.Text(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: session=responsecookie42; Path=/; HttpOnly\r\n" +
            "Location: http://elsewhere/b/k?X-Amz-Signature=locationsignature55&x=1\r\n\r\nok");
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public async Task No_secret_reaches_the_output(bool json, bool debug)
    {
        await using var backend = new RawBackend(Respond);
        var port = SidekickProcess.FreePort();
        string[] args =
        [
            "--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "all", "--log",
            .. json ? new[] { "--json" } : [], .. debug ? new[] { "--debug" } : [], backend.Url.ToString(),
        ];
        await using var sidekick = SidekickProcess.Start(args);
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient(new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false });
        using (var presigned = await client.GetAsync($"http://127.0.0.1:{port}/bucket/obj?{PresignedQuery}"))
        {
            Assert.Equal(200, (int)presigned.StatusCode);
        }

        using (var sigV2 = await client.GetAsync($"http://127.0.0.1:{port}/bucket/v2?{SigV2Query}"))
        {
            Assert.Equal(200, (int)sigV2.StatusCode);
        }

        using (var signed = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/denied/obj"))
        {
            signed.Headers.TryAddWithoutValidation("Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAHEADERCREDENTIAL/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=headersignature9876");
            signed.Headers.TryAddWithoutValidation("Cookie", "session=requestcookie42");
            signed.Headers.TryAddWithoutValidation("X-Amz-Security-Token", "HEADERSESSIONTOKEN");
            using var denied = await client.SendAsync(signed);
            Assert.Equal(403, (int)denied.StatusCode);
        }

        // A graceful stop writes every record of a finished request before the process exits.
        sidekick.Signal("TERM");
        await sidekick.Process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        sidekick.Process.WaitForExit();
        Assert.Equal(0, sidekick.Process.ExitCode);
        var output = sidekick.Stdout + sidekick.Stderr;
        foreach (var secret in Secrets)
        {
            Assert.DoesNotContain(secret, output, StringComparison.OrdinalIgnoreCase);
        }

        var lines = sidekick.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (json)
        {
            var records = lines.Select(l => JsonDocument.Parse(l).RootElement).ToList();
            var queries = debug
                ? records.Where(r => r.TryGetProperty("request", out var q) && q.TryGetProperty("rawquery", out _)).Select(r => r.GetProperty("request").GetProperty("rawquery").GetString())
                : records.Where(r => r.TryGetProperty("query", out _)).Select(r => r.GetProperty("query").GetString());
            Assert.Contains(RedactedPresignedQuery, queries);
            Assert.Contains("AWSAccessKeyId=REDACTED&Expires=1700000000&Signature=REDACTED", queries);
            if (debug)
            {
                var denied = records.Single(r => r.TryGetProperty("request", out var q) && q.GetProperty("path").GetString() == "/denied/obj");
                var headers = denied.GetProperty("request").GetProperty("headers");
                Assert.Equal("REDACTED", headers.GetProperty("Authorization")[0].GetString());
                Assert.Equal("REDACTED", headers.GetProperty("Cookie")[0].GetString());
                Assert.Equal("REDACTED", headers.GetProperty("X-Amz-Security-Token")[0].GetString());
                Assert.Equal("<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>REDACTED</AWSAccessKeyId>" +
                             "<SignatureProvided>REDACTED</SignatureProvided><RequestId>42</RequestId></Error>",
                    denied.GetProperty("response").GetProperty("body").GetString());
                var presigned = records.Single(r => r.TryGetProperty("request", out var q) && q.GetProperty("path").GetString() == "/bucket/obj");
                var responseHeaders = presigned.GetProperty("response").GetProperty("headers");
                Assert.Equal("REDACTED", responseHeaders.GetProperty("Set-Cookie")[0].GetString());
                Assert.Equal("http://elsewhere/b/k?X-Amz-Signature=REDACTED&x=1", responseHeaders.GetProperty("Location")[0].GetString());
            }
        }
        else if (debug)
        {
            var host = backend.Url.ToString().TrimEnd('/');
            Assert.Contains($"DEBUG: {host} GET /bucket/obj?{RedactedPresignedQuery}", lines);
            Assert.Contains($"DEBUG: {host} GET /bucket/v2?AWSAccessKeyId=REDACTED&Expires=1700000000&Signature=REDACTED", lines);
            Assert.Contains($"DEBUG: {host} Authorization: REDACTED", lines);
            Assert.Contains($"DEBUG: {host} Cookie: REDACTED", lines);
            Assert.Contains($"DEBUG: {host} X-Amz-Security-Token: REDACTED", lines);
            Assert.Contains($"DEBUG: {host} Set-Cookie: REDACTED", lines);
            Assert.Contains($"DEBUG: {host} Location: http://elsewhere/b/k?X-Amz-Signature=REDACTED&x=1", lines);
            Assert.Contains($"DEBUG: {host} <Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>REDACTED</AWSAccessKeyId>" +
                            "<SignatureProvided>REDACTED</SignatureProvided><RequestId>42</RequestId></Error>", lines);
        }
        else
        {
            Assert.Contains(lines, l => l.Contains($" GET /bucket/obj?{RedactedPresignedQuery} 127.0.0.1 ", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.Contains(" GET /bucket/v2?AWSAccessKeyId=REDACTED&Expires=1700000000&Signature=REDACTED 127.0.0.1 ", StringComparison.Ordinal));
        }
    }
}
