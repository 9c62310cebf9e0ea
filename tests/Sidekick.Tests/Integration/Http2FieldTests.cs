using Sidekick.Hosting;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Integration;

/// <summary>
/// HTTP/2 carries fields as names and values, not lines: what the client sends over HTTP/2 must still be one field
/// and one request line once sidekick writes it to an HTTP/1.1 backend (RFC 9113 §8.2.1, §8.3.1). The backend is a
/// bare socket, so what it received is checked byte for byte.
/// </summary>
public sealed class Http2FieldTests : IAsyncLifetime
{
    private RawBackend _backend = null!;
    private SidekickInstance _sidekick = null!;
    private int _port;

    public async Task InitializeAsync()
    {
        _backend = new RawBackend(_ => RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        _port = SidekickProcess.FreePort();
        var options = SidekickHarness.FastOptions with
        {
            Address = $"127.0.0.1:{_port}",
            Sites = [_backend.Url.ToString()],
            AutoTlsHost = "127.0.0.1",
        };
        _sidekick = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null });
        await _sidekick.Server.StartAsync();
        // Generous, as ServerTlsTests: a first probe on two busy cores has taken past 15 s.
        await Eventually.WaitUntilAsync(() => _sidekick.Server.Topology.Current.ActiveSite is not null, timeoutMs: 45000);
    }

    public async Task DisposeAsync()
    {
        await _sidekick.DisposeAsync();
        await _backend.DisposeAsync();
    }

    public static TheoryData<string, string, string, string> Hostile => new()
    {
        // The smuggling the check exists for: one name becomes two lines, the second a Transfer-Encoding that makes
        // the body's "0\r\n\r\n" end the request and what follows a second request of the attacker's.
        { "CR LF in a name", "/x", "x: a\r\ntransfer-encoding", "chunked" },
        { "LF in a name", "/x", "x: a\ntransfer-encoding", "chunked" },
        { "space in a name", "/x", "x a", "b" },
        { "colon in a name", "/x", "x:a", "b" },
        { "CR LF in a value", "/x", "x-a", "b\r\ntransfer-encoding: chunked" },
        { "NUL in a value", "/x", "x-a", "b\0c" },
        { "space in the target", "/x HTTP/1.1\r\nx-a: b", "x-b", "c" },
        { "tab in the target", "/x\tHTTP/1.1", "x-b", "c" },
    };

    [Theory]
    [MemberData(nameof(Hostile))]
    public async Task A_field_or_target_that_would_not_stay_one_line_is_refused_and_nothing_reaches_the_backend(
        string what, string path, string name, string value)
    {
        var (status, _) = await RawHttp2Client.SendAsync(
            _port, "POST", path, [(name, value)], body: "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n");

        // Kestrel itself resets some of these streams (status 0); the rest sidekick answers 400. Neither forwards.
        Assert.True(status is 0 or 400, $"{what}: got {status}");
        Assert.Empty(_backend.Requests);
        Assert.DoesNotContain("smuggled", _backend.ReceivedText(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_extended_CONNECT_for_another_protocol_than_websocket_is_refused_and_counts_against_no_backend()
    {
        var backend = _sidekick.Server.Topology.Current.AllBackends.Single();
        var failures = backend.Stats.Failures;

        var (status, body) = await RawHttp2Client.SendAsync(_port, "CONNECT", "/b/k", [(":protocol", "h2c")]);

        Assert.Equal(400, status);
        Assert.Contains(":protocol websocket", body, StringComparison.Ordinal);
        Assert.Empty(_backend.Requests);
        Assert.Equal(failures, backend.Stats.Failures);
    }

    [Fact]
    public async Task A_well_formed_request_reaches_the_backend_with_its_fields_as_sent()
    {
        var (status, body) = await RawHttp2Client.SendAsync(
            _port, "POST", "/bucket/key?x=1", [("x-amz-meta-note", "a b\tc"), ("x-empty", "")], body: "hello");

        Assert.Equal((200, "ok"), (status, body));
        var request = Assert.Single(_backend.Requests);
        Assert.Equal("/bucket/key?x=1", request.Target);
        Assert.Contains("\r\nx-amz-meta-note: a b\tc\r\n", request.Head, StringComparison.Ordinal);
        Assert.Equal("hello"u8.ToArray(), request.Body);
    }
}
