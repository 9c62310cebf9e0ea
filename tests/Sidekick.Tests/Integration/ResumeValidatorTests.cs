using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using Sidekick.Topology;

namespace Sidekick.Tests.Integration;

/// <summary>
/// A GET cut mid-body is continued from another backend only under the same version: the 206 must carry the
/// first response's strong ETag and Last-Modified. A backend that ignores If-Match and sends another version's
/// bytes gets the client connection aborted, never a 200 spliced from two versions.
/// </summary>
public sealed partial class ResumeValidatorTests
{
    private const int Size = 1024 * 1024;
    private const string LastModified = "Tue, 01 Dec 2026 10:00:00 GMT";

    [Theory]
    [InlineData("\"v2\"", LastModified, "validator_mismatch")]
    [InlineData("W/\"v1\"", LastModified, "validator_mismatch")]
    [InlineData(null, LastModified, "validator_mismatch")]
    [InlineData("\"v1\"", "Wed, 02 Dec 2026 10:00:00 GMT", "validator_mismatch")]
    [InlineData("\"v1\"", null, "validator_mismatch")]
    public async Task A_resume_under_another_validator_aborts_the_client(string? etag, string? lastModified, string outcome)
    {
        var first = Version(1);
        var second = Version(2);
        await using var dying = new RawBackend(_ => Truncated(first));
        await using var ignoringIfMatch = new RawBackend(request => Partial(request, second, etag, lastModified));
        await using var sidekick = await StartAsync(dying, ignoringIfMatch);

        using var response = await sidekick.Client.GetAsync("/object", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var body = await response.Content.ReadAsStreamAsync();
        var received = new MemoryStream();
        await Assert.ThrowsAnyAsync<IOException>(() => body.CopyToAsync(received));

        // The second backend was asked (with If-Match), and none of its bytes reached the client.
        var asked = Assert.Single(ignoringIfMatch.Requests);
        Assert.Contains("\r\nIf-Match: \"v1\"\r\n", asked.Head, StringComparison.OrdinalIgnoreCase);
        Assert.True(received.Length < Size, $"the client received {received.Length} bytes");
        Assert.Equal(first.AsSpan(0, (int)received.Length).ToArray(), received.ToArray());
        var metrics = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains($"sidekick_download_resumes_total{{outcome=\"{outcome}\"}} 1", metrics, StringComparison.Ordinal);
        Assert.Contains("sidekick_download_resumes_total{outcome=\"completed\"} 0", metrics, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Content-Encoding: gzip\r\n", "bytes", 0, 0, "validator_mismatch")]
    [InlineData("Content-Encoding: identity\r\n", "bytes", 0, 0, "completed")]
    [InlineData("", "items", 0, 0, "refused")]
    [InlineData("", "bytes", 1, 0, "refused")]
    [InlineData("", "bytes", 0, 10, "refused")]
    public async Task A_resume_that_is_not_exactly_the_missing_bytes_is_not_spliced(string fields, string unit, int endShort, int extra, string outcome)
    {
        // The same version, but another coding of it (gzip bytes after identity ones), another unit, a range
        // that stops short of the end, or more bytes than the range: the client's response is cut, and gets
        // none of them. "identity" is what no Content-Encoding means.
        var first = Version(1);
        await using var dying = new RawBackend(_ => Truncated(first));
        await using var odd = new RawBackend(request => Partial(request, first, "\"v1\"", LastModified, fields, unit, endShort, extra));
        await using var sidekick = await StartAsync(dying, odd);

        using var response = await sidekick.Client.GetAsync("/object", HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        var received = new MemoryStream();
        if (outcome == "completed")
        {
            await body.CopyToAsync(received);
            Assert.Equal(first, received.ToArray());
        }
        else
        {
            // Cut: nothing past the first backend's half, and what arrived is its bytes. How much of that half
            // reaches the client before the cut depends on the socket engine (an abort drops what was not sent yet:
            // 122,266 of 524,288 bytes seen on .NET's engine), so the count is bounded, not exact.
            await Assert.ThrowsAnyAsync<IOException>(() => body.CopyToAsync(received));
            Assert.InRange(received.Length, 0, Size / 2);
            Assert.Equal(first.AsSpan(0, (int)received.Length).ToArray(), received.ToArray());
        }

        var metrics = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains($"sidekick_download_resumes_total{{outcome=\"{outcome}\"}} 1", metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_resume_under_the_same_validators_completes_the_object()
    {
        var first = Version(1);
        await using var dying = new RawBackend(_ => Truncated(first));
        await using var honest = new RawBackend(request => Partial(request, first, "\"v1\"", LastModified));
        await using var sidekick = await StartAsync(dying, honest);

        var body = await sidekick.Client.GetByteArrayAsync("/object");
        Assert.Equal(first, body);
        var metrics = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains("sidekick_download_resumes_total{outcome=\"completed\"} 1", metrics, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("If-None-Match: \"v0\"\r\nIf-Modified-Since: Mon, 30 Nov 2026 10:00:00 GMT\r\n", "If-Match: \"v1\"\r\n")]
    [InlineData("If-Match: \"v1\"\r\nIf-Unmodified-Since: Wed, 02 Dec 2026 10:00:00 GMT\r\n", "")]
    public async Task A_resume_keeps_the_clients_own_conditionals_as_it_signed_them(string conditionals, string added)
    {
        // An S3 SDK signs every field it sends: a resume that dropped or replaced the client's If-None-Match was
        // refused with 403 SignatureDoesNotMatch, and the download cut. They let the first response's version
        // through, so they let it through again; the 206's ETag is checked whatever they say.
        var first = Version(1);
        await using var dying = new RawBackend(_ => Truncated(first));
        await using var honest = new RawBackend(request => Partial(request, first, "\"v1\"", LastModified));
        await using var sidekick = await StartAsync(dying, honest);

        var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, $"GET /object HTTP/1.1\r\nHost: h\r\n{conditionals}\r\n");
        Assert.Equal(200, answer.Status);
        Assert.Equal(first.Length, answer.Body.Length);

        var asked = Assert.Single(honest.Requests).Head;
        foreach (var line in conditionals.Split("\r\n", StringSplitOptions.RemoveEmptyEntries))
        {
            Assert.Contains("\r\n" + line + "\r\n", asked, StringComparison.Ordinal);
        }

        Assert.Equal(1, Regex.Count(asked, "\r\nIf-Match:", RegexOptions.IgnoreCase));
        if (added.Length > 0)
        {
            Assert.Contains("\r\n" + added, asked, StringComparison.Ordinal);
        }
    }

    private static byte[] Version(int number)
    {
        var bytes = new byte[Size];
        new Random(number).NextBytes(bytes);
        return bytes;
    }

    /// <summary>The whole object announced, half of it sent, then the connection closed.</summary>
    private static RawResponse Truncated(byte[] body)
    {
        var head = Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nLast-Modified: {LastModified}\r\nContent-Length: {body.Length}\r\n\r\n");
        return new RawResponse([.. head, .. body.AsSpan(0, body.Length / 2)], Close: true);
    }

    /// <summary>
    /// A 206 for the requested range, whatever If-Match said, under the given validators; with
    /// <paramref name="fields"/> added, the range in another <paramref name="unit"/>, ending
    /// <paramref name="endShort"/> bytes early or followed by <paramref name="extra"/> bytes (counted in its
    /// Content-Length).
    /// </summary>
    private static RawResponse Partial(
        RawRequest request, byte[] body, string? etag, string? lastModified, string fields = "", string unit = "bytes", int endShort = 0, int extra = 0)
    {
        var from = int.Parse(RangeStart().Match(request.Head).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        var end = body.Length - 1 - endShort;
        var sent = end + 1 - from + extra;
        var head = new StringBuilder($"HTTP/1.1 206 Partial Content\r\nContent-Range: {unit} {from}-{end}/{body.Length}\r\nContent-Length: {sent}\r\n{fields}");
        if (etag is not null)
        {
            head.Append($"ETag: {etag}\r\n");
        }

        if (lastModified is not null)
        {
            head.Append($"Last-Modified: {lastModified}\r\n");
        }

        return new RawResponse([.. Encoding.ASCII.GetBytes(head.Append("\r\n").ToString()), .. body.AsSpan(from, end + 1 - from), .. new byte[extra]]);
    }

    private static Task<SidekickHarness> StartAsync(RawBackend first, RawBackend second)
    {
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5) };
        SiteDefinition[] sites =
        [
            new(1, [Definition(first.Url)]),
            new(2, [Definition(second.Url)]),
        ];
        return SidekickHarness.StartAsync(options, sites, hooks: null);
    }

    private static BackendDefinition Definition(Uri url)
    {
        var text = url.ToString().TrimEnd('/');
        return new BackendDefinition(url, text, new Uri(text + "/health"));
    }

    [GeneratedRegex(@"\r\nRange: bytes=(\d+)-", RegexOptions.IgnoreCase)]
    private static partial Regex RangeStart();
}
