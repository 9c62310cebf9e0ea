using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Hosting;
using Sidekick.Topology;

namespace Sidekick.Tests.Integration;

/// <summary>
/// How a download resume fails: a resuming backend whose body breaks too is a broken response (not a backend
/// down), one that stays silent is cut at the backend timeout, and a GET with a body is never resumed (the
/// Range request would go without it).
/// </summary>
public sealed partial class ResumeFailureTests
{
    private const int Size = 1024 * 1024;
    private const string Etag = "\"v1\"";

    [Fact]
    public async Task A_body_that_breaks_on_every_backend_marks_none_of_them_down()
    {
        // The object is broken, not the backends: each resume attempt is one broken response, which takes a
        // run of them (from different requests) to mark a backend down. It was a transport failure, down at once.
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        await using var c = await TestBackend.StartAsync("c");
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a, b, c]);
        var markedDown = MarkDowns(sidekick);
        await DownloadCutMidBodyAsync(sidekick);

        // Resumed (and broken) on the other backends; none of the three is down for it.
        Assert.Contains(new[] { a, b, c }.SelectMany(t => t.Seen), r => r.Headers.ContainsKey("Range"));
        var metrics = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains("sidekick_download_resumes_total{outcome=\"failed\"} 1", metrics, StringComparison.Ordinal);
        Assert.Empty(markedDown);
        Assert.All(new[] { a, b, c }, backend => Assert.True(sidekick.BackendOf(backend).IsUp));
    }

    [Fact]
    public async Task A_resume_that_breaks_on_one_backend_goes_to_another_not_back_to_it()
    {
        // Site 2 has b, which breaks every resume at once, and c, busier with another download: the least-loaded pick
        // chose b on every attempt and the client's body was cut though c could complete it.
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        await using var c = await TestBackend.StartAsync("c");
        a.DieAfterBytes = Size / 8;
        b.DieAfterBytes = 0;
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5) };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a], [b, c]);
        sidekick.BackendOf(c).BeginRequest(); // another client's download in progress on c

        using var response = await sidekick.Client.GetAsync($"/download/{Size}", HttpCompletionOption.ResponseHeadersRead);
        var body = await response.Content.ReadAsByteArrayAsync();

        Assert.Equal(Size, body.Length);
        Assert.True(body.Select((value, offset) => value == TestBackend.Pattern(offset)).All(same => same));
        static int Ranges(TestBackend backend) => backend.Seen.Count(r => r.Headers.ContainsKey("Range"));
        Assert.Equal(1, Ranges(b));
        Assert.Equal(1, Ranges(c));
    }

    [Fact]
    public async Task A_resume_that_gets_no_socket_for_the_next_backend_cuts_the_client_and_marks_no_backend_down()
    {
        // sidekick out of descriptors when a body breaks: the connect to the backend it would resume from fails for want
        // of a socket (EMFILE), which says nothing about that backend. It was a connect failure: that backend down at once.
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        TestBackend[] backends = [a, b];
        static bool Downloaded(TestBackend backend) => backend.Seen.Any(r => r.RawTarget.StartsWith("/download", StringComparison.Ordinal));
        var parts = new ServerParts
        {
            // Refuses, as EMFILE does, every new connection once a backend has served the download: the first resume goes
            // on the other backend's idle probe connection and breaks there too, the second needs a new connection.
            Connect = async (context, token) =>
            {
                if (backends.Any(Downloaded))
                {
                    throw new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.TooManyOpenSockets);
                }

                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(context.DnsEndPoint, token);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        };
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5) };
        await using var sidekick = await SidekickHarness.StartAsync(options, SidekickHarness.Definitions(options, [backends]), hooks: null, parts: parts);
        var markedDown = MarkDowns(sidekick);
        await DownloadCutMidBodyAsync(sidekick);

        var metrics = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains("sidekick_download_resumes_total{outcome=\"failed\"} 1", metrics, StringComparison.Ordinal);
        Assert.Contains("sidekick_socket_shortages_total{during=\"backend\"} 1", metrics, StringComparison.Ordinal);
        Assert.Empty(markedDown);
        Assert.All(backends, backend => Assert.True(sidekick.BackendOf(backend).IsUp));
    }

    [Fact]
    public async Task A_resuming_backend_silent_past_the_backend_timeout_cuts_the_client()
    {
        // The Range request is accepted and never answered: without the backend timeout the client waited forever.
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var dying = new RawBackend(_ => Truncated());
        await using var silent = new RawBackend(_ => new RawResponse([]));
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5), BackendTimeout = TimeSpan.FromSeconds(30) };
        await using var sidekick = await SidekickHarness.StartAsync(options, Sites(dying, silent), new SidekickSeams { Time = time });

        using var response = await sidekick.Client.GetAsync("/object", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var body = await response.Content.ReadAsStreamAsync();
        var received = new MemoryStream();
        var reading = body.CopyToAsync(received);
        await sidekick.WaitUntilAsync(() => silent.Requests.Any(r => RangeStart().IsMatch(r.Head)));
        Assert.False(reading.IsCompleted);

        time.Advance(TimeSpan.FromSeconds(31));
        // Real time only bounds a hang; the fake clock decides.
        await Assert.ThrowsAnyAsync<IOException>(() => reading.WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal(Size / 2, received.Length);
        var metrics = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        Assert.Contains("sidekick_download_resumes_total{outcome=\"failed\"} 1", metrics, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_get_with_a_body_is_not_resumed(bool chunked)
    {
        // The Range request would be sent without the body, so the rest could belong to another request's answer.
        await using var dying = new RawBackend(_ => Truncated());
        await using var other = new RawBackend(request => RawResponse.Text(
            $"HTTP/1.1 206 Partial Content\r\nETag: {Etag}\r\nContent-Range: bytes {Size / 2}-{Size - 1}/{Size}\r\nContent-Length: {Size / 2}\r\n\r\n" +
            new string('x', Size / 2)));
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromMinutes(5) };
        await using var sidekick = await SidekickHarness.StartAsync(options, Sites(dying, other), hooks: null);

        using var request = new HttpRequestMessage(HttpMethod.Get, "/search") { Content = new StringContent("{\"query\":\"q\"}") };
        request.Headers.TransferEncodingChunked = chunked;
        using var response = await sidekick.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var body = await response.Content.ReadAsStreamAsync();
        await Assert.ThrowsAnyAsync<IOException>(() => body.CopyToAsync(Stream.Null));

        Assert.Contains("{\"query\":\"q\"}", Encoding.ASCII.GetString(Assert.Single(dying.Requests).Body), StringComparison.Ordinal);
        Assert.Empty(other.Requests);
        // Not tried at all (a resume of it fails before it reaches a backend when the client sent a length).
        var metrics = await sidekick.Client.GetStringAsync("/.prometheus/metrics");
        var resumes = ResumeCount().Matches(metrics);
        Assert.NotEmpty(resumes);
        Assert.All(resumes, m => Assert.Equal("0", m.Groups[1].Value));
    }

    /// <summary>The whole object announced, half of it sent, then the connection closed.</summary>
    private static RawResponse Truncated()
    {
        var head = Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nETag: {Etag}\r\nContent-Length: {Size}\r\n\r\n");
        return new RawResponse([.. head, .. new byte[Size / 2]], Close: true);
    }

    private static SiteDefinition[] Sites(RawBackend first, RawBackend second) =>
    [
        new(1, [Definition(first.Url)]),
        new(2, [Definition(second.Url)]),
    ];

    private static BackendDefinition Definition(Uri url)
    {
        var text = url.ToString().TrimEnd('/');
        return new BackendDefinition(url, text, new Uri(text + "/health"));
    }

    [GeneratedRegex(@"\r\nRange: bytes=(\d+)-", RegexOptions.IgnoreCase)]
    private static partial Regex RangeStart();

    [GeneratedRegex(@"^sidekick_download_resumes_total\{outcome=""\w+""\} (\d+)$", RegexOptions.Multiline)]
    private static partial Regex ResumeCount();

    /// <summary>Every mark-down from now on, even one a probe undoes a moment later (a passive mark-down wakes the probe loop).</summary>
    private static System.Collections.Concurrent.ConcurrentQueue<string> MarkDowns(SidekickHarness sidekick)
    {
        var markedDown = new System.Collections.Concurrent.ConcurrentQueue<string>();
        foreach (var backend in sidekick.Server.Topology.Current.AllBackends)
        {
            backend.StateChanged += (down, transition) =>
            {
                if (!transition.IsUp)
                {
                    markedDown.Enqueue($"{down.Name}: {transition.Reason}");
                }
            };
        }

        return markedDown;
    }

    /// <summary>A GET whose backend's body breaks an eighth of the way in (and every resume's too): the client's is cut.</summary>
    private static async Task DownloadCutMidBodyAsync(SidekickHarness sidekick)
    {
        using var response = await sidekick.Client.GetAsync($"/download/{Size}?dieAt={Size / 8}", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var body = await response.Content.ReadAsStreamAsync();
        await Assert.ThrowsAnyAsync<IOException>(() => body.CopyToAsync(Stream.Null));
    }
}
