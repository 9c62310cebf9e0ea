using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Forwarding;
using Sidekick.Health;
using Sidekick.Hosting;
using Sidekick.Topology;

namespace Sidekick.Tests.Integration;

/// <summary>
/// What only the HTTP/1.1 fast path can show: which requests it carries, and how it treats the backend's
/// side of a kept-alive connection. Everything else about forwarding is the shared suite, which
/// scripts/test.sh runs against both paths (SIDEKICK_FORWARDER=yarp for the second run).
/// </summary>
public sealed class Http1PathTests
{
    private static readonly SidekickSeams FastPath = new() { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", "http1")) };

    [Fact]
    public async Task Plain_requests_take_the_fast_path_and_the_rest_go_through_yarp()
    {
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await StartAsync(FastPath, a.Url);
        var server = sidekick.Server;

        await sidekick.Client.GetStringAsync("/x");
        using (var small = await sidekick.Client.PutAsync("/upload", new ByteArrayContent(new byte[1000])))
        {
            small.EnsureSuccessStatusCode();
        }

        Assert.Equal(2, server.FastPathRequests);

        // Unknown length, Expect: 100-continue and bodies past the inline limit go to YARP.
        using var chunked = new HttpRequestMessage(HttpMethod.Put, "/upload") { Content = new StreamContent(new MemoryStream(new byte[10])) };
        chunked.Headers.TransferEncodingChunked = true;
        (await sidekick.Client.SendAsync(chunked)).Dispose();
        using var expect = new HttpRequestMessage(HttpMethod.Put, "/upload") { Content = new ByteArrayContent(new byte[10]) };
        expect.Headers.ExpectContinue = true;
        (await sidekick.Client.SendAsync(expect)).Dispose();
        (await sidekick.Client.PutAsync("/upload", new ByteArrayContent(new byte[200_000]))).Dispose();
        Assert.Equal(2, server.FastPathRequests);

        await using var yarpOnly = await StartAsync(new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", "yarp")) }, a.Url);
        await yarpOnly.Client.GetStringAsync("/x");
        Assert.Equal(0, yarpOnly.Server.FastPathRequests);
    }

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task Both_paths_count_request_headers_as_upstream_does(string forwarder)
    {
        // Rx of a bodyless request: name and value of every header the client sent, Host once.
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await StartAsync(new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) }, a.Url);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/x");
        request.Headers.Add("X-Counted", ["one", "three"]);
        (await sidekick.Client.SendAsync(request)).Dispose();

        // HttpClient sends the two values on one line: "X-Counted: one, three".
        var expected = "Host".Length + sidekick.Client.BaseAddress!.Authority.Length + "X-Counted".Length + "one, three".Length;
        var backend = sidekick.Server.Topology.Current.AllBackends.Single();
        await sidekick.WaitUntilAsync(() => backend.Stats.RxBytes > 0);
        Assert.Equal(expected, backend.Stats.RxBytes);
    }

    [Theory]
    [InlineData("http1", "length")]
    [InlineData("http1", "chunked")]
    [InlineData("http1", "close")]
    [InlineData("yarp", "length")]
    [InlineData("yarp", "chunked")]
    [InlineData("yarp", "close")]
    public async Task Both_paths_count_response_body_bytes_whatever_the_framing(string forwarder, string framing)
    {
        // Two responses with heads of the same length and bodies 8,000 bytes apart: Tx grows by that much more.
        await using var backend = new RawBackend(request => Framed(framing, request.Target == "/small" ? 1000 : 9000));
        await using var sidekick = await StartAsync(new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) }, backend.Url);
        var stats = sidekick.Server.Topology.Current.AllBackends.Single().Stats;

        Assert.Equal(1000, (await sidekick.Client.GetByteArrayAsync("/small")).Length);
        await sidekick.WaitUntilAsync(() => stats.TxBytes > 0);
        var small = stats.TxBytes;
        Assert.Equal(9000, (await sidekick.Client.GetByteArrayAsync("/large")).Length);
        await sidekick.WaitUntilAsync(() => stats.TxBytes > small);

        Assert.Equal(8000, stats.TxBytes - small - small);
    }

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task The_head_and_the_first_body_bytes_reach_the_client_while_the_rest_is_still_to_come(string forwarder)
    {
        // A slow origin (or a stream): 1,000 of 200,000 bytes, then nothing more until the test ends. The client must
        // see the head and those bytes now, not when the rest comes.
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + new string('x', 1000)));
        await using var sidekick = await StartAsync(new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) }, backend.Url);
        using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(30));

        using var response = await sidekick.Client.GetAsync("/stream", HttpCompletionOption.ResponseHeadersRead, patience.Token);
        Assert.Equal(200000, response.Content.Headers.ContentLength);
        await using var body = await response.Content.ReadAsStreamAsync(patience.Token);
        var first = new byte[1000];
        await body.ReadExactlyAsync(first, patience.Token);
        Assert.All(first, b => Assert.Equal((byte)'x', b));
    }

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task Exchanges_on_one_kept_alive_connection_count_only_their_own_bytes(string forwarder)
    {
        // One meter serves the exchanges of a client connection in turn: each must start from zero.
        await using var a = await TestBackend.StartAsync("a");
        await using var sidekick = await StartAsync(new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) }, a.Url);
        var stats = sidekick.Server.Topology.Current.AllBackends.Single().Stats;
        async Task<(long Rx, long Tx)> Exchange(Func<Task<HttpResponseMessage>> send)
        {
            var (calls, rx, tx) = (stats.Calls, stats.RxBytes, stats.TxBytes);
            (await send()).EnsureSuccessStatusCode().Dispose();
            await sidekick.WaitUntilAsync(() => stats.Calls > calls);
            return (stats.RxBytes - rx, stats.TxBytes - tx);
        }

        var firstGet = await Exchange(() => sidekick.Client.GetAsync("/x"));
        var largePut = await Exchange(() => sidekick.Client.PutAsync("/upload", new ByteArrayContent(new byte[1000])));
        var smallPut = await Exchange(() => sidekick.Client.PutAsync("/upload", new ByteArrayContent(new byte[10])));
        var secondGet = await Exchange(() => sidekick.Client.GetAsync("/x"));

        // Same headers but the body length's digits (4 against 2): 990 body bytes and 2 header bytes apart.
        Assert.Equal(992, largePut.Rx - smallPut.Rx);
        Assert.Equal(firstGet, secondGet);
    }

    [Fact]
    public async Task Sequential_requests_share_one_kept_alive_connection()
    {
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        await using var sidekick = await StartAsync(FastPath, backend.Url);
        var before = backend.Connections;

        for (var i = 0; i < 50; i++)
        {
            Assert.Equal("ok", await sidekick.Client.GetStringAsync($"/r{i}"));
        }

        Assert.Equal(50, backend.Requests.Count);
        Assert.Equal(1, backend.Connections - before);
    }

    [Theory]
    [InlineData("Keep-Alive: timeout=5\r\n", 2)]
    [InlineData("", 1)]
    public async Task A_connection_is_not_reused_when_the_backend_is_about_to_close_it_as_its_Keep_Alive_said(string keepAlive, int connections)
    {
        // Node and Apache announce how long they keep an idle connection (Node: 5 s, then closed). Sent on
        // just before that, a request races the close: a resend for a GET, a 502 for a POST. The clock is
        // the pool's, moved by hand; the backend never closes, so only the announced limit can tell.
        await using var backend = new RawBackend(_ => RawResponse.Text($"HTTP/1.1 200 OK\r\n{keepAlive}Content-Length: 2\r\n\r\nok"));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var sidekick = await StartAsync(FastPath with { Time = time }, backend.Url);

        Assert.Equal("ok", await sidekick.Client.GetStringAsync("/first"));
        time.Advance(TimeSpan.FromSeconds(3.9));
        Assert.Equal("ok", await sidekick.Client.GetStringAsync("/within"));
        time.Advance(TimeSpan.FromSeconds(4.5));
        using (var post = await sidekick.Client.PostAsync("/late", new StringContent("body")))
        {
            Assert.Equal("ok", await post.Content.ReadAsStringAsync());
        }

        var ours = backend.Requests.Where(r => r.Target is "/first" or "/within" or "/late").ToList();
        Assert.Equal(["/first", "/within", "/late"], ours.Select(r => r.Target));
        Assert.Equal(ours[0].ConnectionNumber, ours[1].ConnectionNumber);
        Assert.Equal(connections, ours.Select(r => r.ConnectionNumber).Distinct().Count());
    }

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task Header_values_with_bytes_above_0x7F_reach_the_client_as_the_backend_sent_them(string forwarder)
    {
        // UTF-8 in S3 user metadata (MinIO sends it raw), a Latin-1 file name: Kestrel refused any character above
        // 0x7F with an exception, so the client got a 500 and the backend connection was never released.
        // A name of each case's own: which names are written as Latin-1 is learned once per process.
        var head = $"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Amz-Meta-Via-{forwarder}: caf\u00c3\u00a9\r\n" +
                   "Content-Disposition: attachment; filename=\"\u00e9t\u00e9.txt\"\r\n\r\nok";
        await using var backend = new RawBackend(_ => RawResponse.Text(head));
        await using var sidekick = await StartAsync(new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) }, backend.Url);

        for (var i = 0; i < 3; i++)
        {
            var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, $"GET /o{i} HTTP/1.1\r\nHost: h\r\n\r\n");
            Assert.Equal((200, "ok"), (answer.Status, answer.Body));
            Assert.Contains($"\r\nX-Amz-Meta-Via-{forwarder}: caf\u00c3\u00a9\r\n", answer.Head, StringComparison.Ordinal);
            Assert.Contains("\r\nContent-Disposition: attachment; filename=\"\u00e9t\u00e9.txt\"\r\n", answer.Head, StringComparison.Ordinal);
        }

        // The one connection served all three: none was left behind by an exception.
        Assert.Single(backend.Requests.Select(r => r.ConnectionNumber).Distinct());
    }

    [Fact]
    public async Task Control_characters_in_a_backends_header_value_become_spaces()
    {
        // RFC 9110 §5.5: not field content. Kestrel refuses to send them; the head is not refused for one field.
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Ctl: a\u0001b\u001fc\u007fd\te\r\n\r\nok"));
        await using var sidekick = await StartAsync(FastPath, backend.Url);

        var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, "GET /o HTTP/1.1\r\nHost: h\r\n\r\n");

        Assert.Equal((200, "ok"), (answer.Status, answer.Body));
        Assert.Contains("\r\nX-Ctl: a b c d\te\r\n", answer.Head, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_request_the_backend_left_unanswered_past_the_backend_timeout_is_not_sent_again()
    {
        // A POST without a body on a kept-alive connection may be sent again when the backend had closed that
        // connection (nothing reached its application). Not when the backend timeout cut it: the backend had the
        // request and was slow, and may have acted on it (S3's POST ?uploads starts an upload each time).
        await using var backend = new RawBackend(r => r.Target == "/slow" ? new RawResponse([]) : RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var options = SidekickHarness.FastOptions with { BackendTimeout = TimeSpan.FromSeconds(30) };
        var url = backend.Url.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(backend.Url, url, new Uri(url + options.HealthPath))])];
        await using var sidekick = await SidekickHarness.StartAsync(options, sites, FastPath with { Time = time });

        Assert.Equal("ok", await sidekick.Client.GetStringAsync("/first"));
        var post = sidekick.Client.PostAsync("/slow", content: null);
        await sidekick.WaitUntilAsync(() => backend.Requests.Any(r => r.Target == "/slow"));
        for (var second = 0; second < 100 && !post.IsCompleted; second++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(10);
        }

        using var response = await post;
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        var first = backend.Requests.Single(r => r.Target == "/first");
        var slow = Assert.Single(backend.Requests, r => r.Target == "/slow");
        Assert.Equal(first.ConnectionNumber, slow.ConnectionNumber);
    }

    [Fact]
    public async Task A_response_head_dripped_a_byte_at_a_time_is_cut_at_the_backend_timeout_counted_from_the_request()
    {
        // Each byte well within the timeout of the one before, the whole head far past it: a backend (or anything
        // between) doing so held the client for as long as it liked, when each byte moved the deadline on.
        using var next = new SemaphoreSlim(0);
        await using var backend = new RawBackend(_ => new RawResponse(
            System.Text.Encoding.Latin1.GetBytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Padding: dripped-slowly\r\n\r\nok"),
            BeforeEachByte: _ => next.WaitAsync()));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var options = SidekickHarness.FastOptions with { BackendTimeout = TimeSpan.FromSeconds(30) };
        var url = backend.Url.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(backend.Url, url, new Uri(url + options.HealthPath))])];
        await using var sidekick = await SidekickHarness.StartAsync(options, sites, FastPath with { Time = time });

        var get = sidekick.Client.GetAsync("/dripped");
        await sidekick.WaitUntilAsync(() => backend.Requests.Any(r => r.Target == "/dripped"));
        for (var step = 0; step < 200 && !get.IsCompleted; step++)
        {
            next.Release(); // one more byte of the head, 10 s after the last
            await Task.Delay(10);
            time.Advance(TimeSpan.FromSeconds(10));
        }

        using var response = await get;
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [InlineData("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n")]
    public async Task A_connection_whose_response_was_framed_faultily_is_not_used_again(string head)
    {
        // RFC 9112 §6.1 and §6.3: such framing may be an attempt at response splitting; what follows it on the
        // connection must not be read as the next client's response.
        await using var backend = new RawBackend(_ => RawResponse.Text(head + "5\r\nhello\r\n0\r\n\r\n"));
        await using var sidekick = await StartAsync(FastPath, backend.Url);

        Assert.Equal("hello", await sidekick.Client.GetStringAsync("/first"));
        Assert.Equal("hello", await sidekick.Client.GetStringAsync("/second"));

        var first = backend.Requests.Single(r => r.Target == "/first");
        var second = backend.Requests.Single(r => r.Target == "/second");
        Assert.NotEqual(first.ConnectionNumber, second.ConnectionNumber);
    }

    [Theory]
    [InlineData("POST", "http1")]
    [InlineData("PATCH", "http1")]
    [InlineData("M-SEARCH", "http1")]
    [InlineData("POST", "yarp")]
    [InlineData("M-SEARCH", "yarp")]
    public async Task A_bodyless_request_of_a_method_that_is_not_idempotent_is_never_sent_twice(string method, string forwarder)
    {
        // The backend reads the request, acts on it, and its connection ends before it answers (it crashed, or its
        // handler did). That looks like a kept-alive connection the backend had closed as the request went out, but
        // the request was carried out: sending it again would carry it out twice (RFC 9110 §9.2.2).
        await using var backend = new RawBackend(r => r.Target == "/charge"
            ? new RawResponse([], Close: true)
            : RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        await using var sidekick = await StartAsync(new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) }, backend.Url);

        Assert.Equal("ok", await sidekick.Client.GetStringAsync("/warm"));
        var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, $"{method} /charge HTTP/1.1\r\nHost: h\r\n\r\n");

        Assert.Equal(502, answer.Status);
        var charge = Assert.Single(backend.Requests, r => r.Target == "/charge");
        Assert.Equal(backend.Requests.Single(r => r.Target == "/warm").ConnectionNumber, charge.ConnectionNumber);
    }

    [Fact]
    public async Task A_response_head_of_more_field_lines_than_the_limit_is_a_502_and_none_of_it_reaches_the_client()
    {
        // A broken or hostile backend's head of many tiny fields (each one costs a parse and a header on the client's
        // response): past BackendLimits.MaxResponseHeadFieldLines the head is refused like any malformed one.
        var fields = string.Concat(Enumerable.Range(0, BackendLimits.MaxResponseHeadFieldLines).Select(i => $"X-Leak-{i}: v\r\n"));
        await using var backend = new RawBackend(r => r.Target == "/many"
            ? RawResponse.Text($"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n{fields}\r\nsecret")
            : RawResponse.Text($"HTTP/1.1 200 OK\r\n{fields[..^("X-Leak-999: v\r\n".Length)]}Content-Length: 2\r\n\r\nok"));
        await using var sidekick = await StartAsync(FastPath, backend.Url);

        var answer = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, "GET /many HTTP/1.1\r\nHost: h\r\n\r\n");
        Assert.Equal(502, answer.Status);
        Assert.DoesNotContain("X-Leak", answer.Head, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("secret", answer.Body, StringComparison.Ordinal);
        Assert.Contains(backend.Requests, r => r.Target == "/many"); // (a bodyless GET is retried, as after any malformed head)

        // At the limit (this one's Content-Length is its last field line) the head is taken whole.
        var atLimit = await RawClient.ExchangeAsync(sidekick.BaseAddress.Port, "GET /at-limit HTTP/1.1\r\nHost: h\r\n\r\n");
        Assert.Equal((200, "ok"), (atLimit.Status, atLimit.Body));
        Assert.Contains("\r\nX-Leak-998: v\r\n", atLimit.Head, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bytes_a_backend_sends_after_its_response_are_never_read_as_the_next_clients_response()
    {
        // A backend that answers twice (a response to a request smuggled past it, a body after a HEAD response)
        // leaves bytes on the idle connection. Reused within a second without a look, the next client got them as
        // its response, and its own response went to the client after it.
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var stray = new TaskCompletionSource();
        var straySent = new TaskCompletionSource();
        using var stop = new CancellationTokenSource();
        var serving = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var socket = await listener.AcceptSocketAsync(stop.Token);
                _ = Task.Run(async () =>
                {
                    using var _ = socket;
                    var connection = new ScriptedConnection(socket);
                    while (await connection.NextHeadAsync() is { } head)
                    {
                        var first = head.StartsWith("GET /first ", StringComparison.Ordinal);
                        await socket.SendAsync(Encoding.ASCII.GetBytes(first ? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" : "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"));
                        if (first)
                        {
                            await stray.Task;
                            await socket.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen"u8.ToArray());
                            straySent.SetResult();
                        }
                    }
                });
            }
        });
        var url = new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}");
        await using (var sidekick = await StartAsync(FastPath, url))
        {
            Assert.Equal("ok", await sidekick.Client.GetStringAsync("/first"));
            stray.SetResult();
            await straySent.Task;
            // Once the loop has seen them arrive; what is still on its way to the loop is not seen (that window is
            // microseconds, against the second the connection went without a look before).
            await sidekick.WaitUntilAsync(() => sidekick.Server.FastPathIdleWithArrivals > 0);

            Assert.Equal("fresh", await sidekick.Client.GetStringAsync("/second"));
            Assert.Equal("fresh", await sidekick.Client.GetStringAsync("/third"));
        }

        await stop.CancelAsync();
        listener.Stop();
        await Assert.ThrowsAnyAsync<Exception>(() => serving);
    }

    [Fact]
    public async Task A_POST_whose_body_outlasts_the_backends_keep_alive_goes_out_on_a_new_connection()
    {
        // The POST's head takes the idle connection (alive then); the backend closes it, as its keep-alive timeout
        // would, while the client is still to send the body. A POST cannot be resent, so it must not be sent there.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var stop = new CancellationTokenSource();
        var closeFirst = new TaskCompletionSource();
        var firstClosed = new TaskCompletionSource();
        var posts = new System.Collections.Concurrent.ConcurrentQueue<(int Connection, string Body)>();
        var firstConnection = 0;
        var serving = Task.Run(async () =>
        {
            var number = 0;
            while (!stop.IsCancellationRequested)
            {
                var socket = await listener.AcceptSocketAsync(stop.Token);
                var connection = ++number;
                _ = Task.Run(async () =>
                {
                    using var _ = socket;
                    var scripted = new ScriptedConnection(socket);
                    while (await scripted.NextHeadAsync() is { } head)
                    {
                        if (await scripted.BodyAsync(head.Contains("Content-Length: 5", StringComparison.Ordinal) ? 5 : 0) is not { } body)
                        {
                            return;
                        }

                        if (head.StartsWith("POST", StringComparison.Ordinal))
                        {
                            posts.Enqueue((connection, body));
                        }

                        await socket.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"u8.ToArray());
                        if (head.StartsWith("GET /first", StringComparison.Ordinal))
                        {
                            firstConnection = connection;
                            await closeFirst.Task;
                            socket.Close();
                            firstClosed.SetResult();
                            return;
                        }
                    }
                });
            }
        });
        var url = new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}");
        await using (var sidekick = await StartAsync(FastPath, url))
        {
            Assert.Equal("done", await sidekick.Client.GetStringAsync("/first"));
            await sidekick.WaitUntilAsync(() => sidekick.Server.FastPathIdle == 1);

            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, sidekick.BaseAddress.Port);
            var stream = client.GetStream();
            await stream.WriteAsync("POST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"u8.ToArray());
            await sidekick.WaitUntilAsync(() => sidekick.Server.FastPathIdle == 0); // the POST took it, alive
            closeFirst.SetResult();
            await firstClosed.Task;
            await stream.WriteAsync("hello"u8.ToArray());

            var answer = new byte[1024];
            var read = await stream.ReadAsync(answer).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.StartsWith("HTTP/1.1 200 ", Encoding.ASCII.GetString(answer, 0, read), StringComparison.Ordinal);
        }

        var post = Assert.Single(posts);
        Assert.Equal("hello", post.Body);
        Assert.NotEqual(firstConnection, post.Connection);
        await stop.CancelAsync();
        listener.Stop();
        await Assert.ThrowsAnyAsync<Exception>(() => serving);
    }

    [Fact]
    public async Task A_client_that_pauses_reading_longer_than_the_backend_timeout_is_no_fault_of_the_backend()
    {
        // --backend-timeout is how long the backend may stay silent. While the copy waits for a client that stopped
        // reading, the backend is not silent: its connection was cut, counted as its broken response (five such
        // clients marked it down) and the body resumed with a Range request.
        const long size = 16L * 1024 * 1024;
        await using var a = await TestBackend.StartAsync("a");
        var url = a.Url;
        var options = SidekickHarness.FastOptions with { BackendTimeout = TimeSpan.FromSeconds(1), ClientSendTimeout = TimeSpan.FromSeconds(60) };
        var text = url.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(url, text, new Uri(text + options.HealthPath))])];
        await using var sidekick = await SidekickHarness.StartAsync(options, sites, FastPath);

        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 8192 };
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, sidekick.BaseAddress.Port));
        await socket.SendAsync(Encoding.ASCII.GetBytes($"GET /download/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        var buffer = new byte[64 * 1024];
        var received = new MemoryStream();
        received.Write(buffer, 0, await socket.ReceiveAsync(buffer));

        // A consumer applying backpressure: longer than the backend timeout and the pool's 1 s sweep together.
        await Task.Delay(TimeSpan.FromSeconds(3));
        int read;
        while ((read = await socket.ReceiveAsync(buffer)) > 0)
        {
            received.Write(buffer, 0, read);
        }

        var all = received.ToArray();
        var bodyStart = all.AsSpan().IndexOf("\r\n\r\n"u8) + 4;
        Assert.Equal(size, all.Length - bodyStart);
        Assert.True(all.AsSpan(bodyStart).ToArray().Select((value, offset) => value == TestBackend.Pattern(offset)).All(same => same));
        Assert.DoesNotContain(a.Seen, r => r.Headers.ContainsKey("Range"));
        Assert.Equal(0, sidekick.BackendOf(a).Stats.Failures);
    }

    [Fact]
    public async Task A_backend_closing_kept_alive_connections_unannounced_costs_no_request()
    {
        // Every response is followed by a close the response never announced: each next request finds
        // its pooled connection dead. Idempotent requests are resent on a fresh connection; a POST is
        // never sent on a connection that looks closed.
        await using var backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone", close: true));
        await using var sidekick = await StartAsync(FastPath, backend.Url);
        var client = sidekick.Client;

        var sent = 0;
        for (var i = 0; i < 5; i++)
        {
            foreach (var method in new[] { HttpMethod.Get, HttpMethod.Put, HttpMethod.Delete, HttpMethod.Post })
            {
                // The pause lets the close arrive first, as it does when a backend's idle timer fires.
                await Task.Delay(20);
                using var request = new HttpRequestMessage(method, $"/o{sent}");
                if (method == HttpMethod.Put || method == HttpMethod.Post)
                {
                    request.Content = new StringContent("body");
                }

                using var response = await client.SendAsync(request);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.Equal("done", await response.Content.ReadAsStringAsync());
                sent++;
            }
        }

        // Each request reached the backend exactly once, and the backend was never blamed.
        Assert.Equal(Enumerable.Range(0, sent).Select(i => $"/o{i}"), backend.Requests.Select(r => r.Target));
        Assert.Null(sidekick.Server.Topology.Current.AllBackends.Single().GetHealthSnapshot().LastDownReason);
    }

    [Fact]
    public async Task Legal_but_unusual_framing_is_decoded()
    {
        // Bare LF line ends, a 1xx before the answer, chunk extensions and trailers, a header named in
        // Connection (dropped), repeated headers (kept, in order).
        const string wire =
            "HTTP/1.1 103 Early Hints\nLink: </a.css>\n\n" +
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nConnection: X-Secret\nX-Secret: 1\nX-Multi: one\nX-Multi: two\n\n" +
            "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
        await using var backend = new RawBackend(_ => RawResponse.Text(wire));
        await using var sidekick = await StartAsync(FastPath, backend.Url);

        using var response = await sidekick.Client.GetAsync("/chunks");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("hello, world", await response.Content.ReadAsStringAsync());
        Assert.False(response.Headers.Contains("X-Secret"));
        Assert.Equal(["one", "two"], response.Headers.GetValues("X-Multi"));

        // And again on the same connection: the decoder left nothing behind.
        Assert.Equal("hello, world", await sidekick.Client.GetStringAsync("/chunks"));
        Assert.Single(backend.Requests.Select(r => r.ConnectionNumber).Distinct());
    }

    [Theory]
    [InlineData("garbage\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")]
    [InlineData("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\n X-A: folded first\r\n\r\n")]
    public async Task A_response_head_that_cannot_be_trusted_is_a_502_and_counts_against_the_backend(string wire)
    {
        await using var backend = new RawBackend(_ => RawResponse.Text(wire, close: true));
        await using var sidekick = await StartAsync(FastPath, backend.Url);
        var node = sidekick.Server.Topology.Current.AllBackends.Single();

        // One broken head says something about one URL: the backend stays up. A run of them from different
        // requests marks it down.
        for (var i = 1; i <= HealthProber.BrokenResponsesToMarkDown; i++)
        {
            using var response = await sidekick.Client.GetAsync($"/bad/{i}");
            Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
            Assert.Contains("<Code>BackendDown</Code>", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            if (i == 1)
            {
                Assert.True(node.IsUp);
                Assert.Null(node.GetHealthSnapshot().LastDownReason);
            }
        }

        var reason = node.GetHealthSnapshot().LastDownReason;
        Assert.Contains("invalid response", reason, StringComparison.Ordinal);
        Assert.Contains($"{HealthProber.BrokenResponsesToMarkDown} broken responses in a row", reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_body_cut_short_aborts_the_client_response()
    {
        await using var backend = new RawBackend(r => r.Target == "/short"
            ? RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + new string('x', 5000), close: true)
            : RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        await using var sidekick = await StartAsync(FastPath, backend.Url);

        using var response = await sidekick.Client.GetAsync("/short", HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        await Assert.ThrowsAnyAsync<IOException>(() => body.CopyToAsync(Stream.Null));

        // One body cut short is one URL's failure, not the backend's: it stays up and the next request is whole.
        var node = sidekick.Server.Topology.Current.AllBackends.Single();
        Assert.True(node.IsUp);
        Assert.Null(node.GetHealthSnapshot().LastDownReason);
        Assert.Equal("ok", await sidekick.Client.GetStringAsync("/after"));
    }

    [Theory]
    [InlineData(null, true)]
    [InlineData("http1", true)]
    [InlineData(" YARP ", false)]
    public void The_forwarder_variable_picks_the_path(string? value, bool http1) =>
        Assert.Equal(http1, Sidekick.Forwarding.Http1.ForwarderChoice.UsesHttp1Path(value));

    [Fact]
    public void An_unknown_forwarder_is_refused_in_one_line_naming_it()
    {
        var error = Assert.Throws<Sidekick.Cli.FatalException>(() => Sidekick.Forwarding.Http1.ForwarderChoice.UsesHttp1Path("fast"));
        Assert.Equal("invalid SIDEKICK_FORWARDER 'fast': expected 'http1' (the default) or 'yarp'", error.Message);
    }

    /// <summary>A 200 with <paramref name="size"/> body bytes, framed by a length, by chunks, or by closing.</summary>
    private static RawResponse Framed(string framing, int size)
    {
        var body = new string('b', size);
        return framing switch
        {
            "length" => RawResponse.Text($"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n{body}"),
            "chunked" => RawResponse.Text($"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size:x}\r\n{body}\r\n0\r\n\r\n"),
            _ => RawResponse.Text($"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}", close: true),
        };
    }

    private static Task<SidekickHarness> StartAsync(SidekickSeams hooks, Uri backend)
    {
        var options = SidekickHarness.FastOptions;
        var url = backend.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(backend, url, new Uri(url + options.HealthPath))])];
        return SidekickHarness.StartAsync(options, sites, hooks);
    }
}
