using Sidekick.Hosting;
using Sidekick.Topology;

namespace Sidekick.Tests.Integration;

/// <summary>
/// Request framing the backend could read differently from sidekick, or a request it would take for another: refused
/// or answered here. The backend is a bare socket, so what it received is checked byte for byte; both forwarders run.
/// </summary>
public sealed class RequestFramingTests
{
    public static TheoryData<string, string> UnknownCodings
    {
        get
        {
            var data = new TheoryData<string, string>();
            foreach (var forwarder in new[] { "http1", "yarp" })
            {
                data.Add(forwarder, "Transfer-Encoding: gzip, chunked\r\n");
                data.Add(forwarder, "Transfer-Encoding: identity, chunked\r\n");
                data.Add(forwarder, "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n");
            }

            return data;
        }
    }

    /// <summary>
    /// A transfer coding other than a single chunked: Go's server (upstream) answers 501 ("unsupported transfer
    /// encoding") or 400 (chunked twice, RFC 9112 §6.1 forbids it). Sidekick decodes the chunked layer only, drops the
    /// Transfer-Encoding field (hop-by-hop) and re-chunks, so the backend stores the still-gzip-coded bytes as the
    /// object's content, told nothing of the coding: wrong bytes. The response side refuses the same codings (the
    /// corpus's "unknown transfer coding" entries); the request side does not.
    /// </summary>
    [Theory]
    [MemberData(nameof(UnknownCodings))]
    public async Task A_request_transfer_coding_sidekick_cannot_forward_is_refused_not_silently_dropped(string forwarder, string fields)
    {
        await using var backend = new RawBackend(Echo);
        await using var sidekick = await StartAsync(forwarder, backend.Url);

        var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port,
            $"PUT /bucket/object HTTP/1.1\r\nHost: x\r\n{fields}\r\n5\r\nhello\r\n0\r\n\r\n");

        Assert.True(answer.Status is 400 or 501, $"got {answer.Status}; the backend received: {backend.ReceivedText()}");
        Assert.Empty(backend.Requests);
    }

    /// <summary>
    /// "OPTIONS *" asks about the server, not a resource (RFC 9110 §9.3.7). Upstream's Go server answers it itself (200,
    /// empty; spec §10 "worth keeping"); sidekick sends the backend "OPTIONS /", a different request (S3: a
    /// CORS preflight of the service root), whose answer the client then takes for the server's.
    /// </summary>
    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task OPTIONS_asterisk_never_reaches_the_backend_as_OPTIONS_slash(string forwarder)
    {
        await using var backend = new RawBackend(Echo);
        await using var sidekick = await StartAsync(forwarder, backend.Url);

        var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");

        Assert.Equal(200, answer.Status);
        Assert.DoesNotContain(backend.Requests, r => r.Method == "OPTIONS" && r.Target == "/");
    }

    /// <summary>
    /// RFC 9112 §6.1: a server that receives an HTTP/1.0 message with Transfer-Encoding MUST treat its framing as faulty
    /// and close the connection after answering it. Go's server (upstream) ignores Transfer-Encoding in HTTP/1.0, so
    /// the two read such a stream differently; Kestrel decodes it as chunked and keeps the connection open, and
    /// sidekick forwards what follows on it as a further request.
    /// </summary>
    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task An_HTTP_1_0_request_with_Transfer_Encoding_ends_its_connection(string forwarder)
    {
        await using var backend = new RawBackend(Echo);
        await using var sidekick = await StartAsync(forwarder, backend.Url);

        var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port,
            "POST /first HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
            "GET /second HTTP/1.0\r\nHost: x\r\n\r\n");

        Assert.True(answer.Status is 400 or 501 || answer.Head.Contains("Connection: close", StringComparison.OrdinalIgnoreCase),
            $"got {answer.Status} without Connection: close");
        await Task.Delay(500);
        Assert.DoesNotContain(backend.Requests, r => r.Target == "/second");
    }

    /// <summary>
    /// A 204 that carries a Content-Length (RFC 9110 §8.6 forbids it; seen from servers that always set the field):
    /// the HTTP/1.1 path passes the 204 on, YARP's path answers 500 (a HEAD: the connection closed without an answer),
    /// and the trace records 204 for both. Every request to a TLS backend, and every large or chunked upload, takes
    /// YARP's path.
    /// </summary>
    [Theory]
    [InlineData("GET")]
    [InlineData("DELETE")]
    public async Task A_204_with_a_content_length_reaches_the_client_as_a_204_on_yarps_path_too(string method)
    {
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\n"));
        await using var sidekick = await StartAsync("yarp", backend.Url);

        var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, $"{method} /b/k HTTP/1.1\r\nHost: x\r\n\r\n");

        Assert.Equal(204, answer.Status);
    }

    private static RawResponse Echo(RawRequest request) =>
        RawResponse.Text($"HTTP/1.1 200 OK\r\nContent-Length: {request.Target.Length}\r\n\r\n{request.Target}");

    private static Task<SidekickHarness> StartAsync(string forwarder, Uri backend)
    {
        var options = SidekickHarness.FastOptions;
        var url = backend.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(backend, url, new Uri(url + options.HealthPath))])];
        return SidekickHarness.StartAsync(options, sites, new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) });
    }
}
