using System.Text.Json;
using Sidekick.Cli;
using Sidekick.Observability;
using Sidekick.Topology;

namespace Sidekick.Tests.Observability;

public sealed class TraceFormatTests
{
    private static readonly TraceRecord Record = new()
    {
        IsProbe = false,
        Host = "http://minio2:9000",
        Time = new DateTime(2026, 1, 1, 12, 0, 0, 123, DateTimeKind.Utc),
        Client = "127.0.0.1",
        Rx = 512,
        Tx = 1024 * 1024,
        Latency = TimeSpan.FromTicks(12_340),
        TimeToFirstByte = TimeSpan.FromMilliseconds(1),
        StatusCode = 200,
        Method = "GET",
        Path = "/bucket/obj",
        Query = "versionId=1",
        ProbeUrl = "http://minio2:9000/minio/health/ready",
        RequestHeaders = [new("Authorization", ["AWS4-HMAC-SHA256 x"])],
        ResponseHeaders = [new("Etag", ["\"abc\""])],
    };

    private static ConsoleMode Mode(bool json = false, bool debug = false) => new(true, false, false, json, debug);

    [Fact]
    public void Short_text_line_matches_upstream_layout() =>
        Assert.Equal(
            "   LOG: 12:00:00.123 [200 OK]  http://minio2:9000 GET /bucket/obj?versionId=1 127.0.0.1       " +
            "  1.234ms      ↑ 512 B ↓ 1.0 MiB",
            new TraceFormatter(Mode()).ShortText(Record));

    [Fact]
    public void Debug_block_prefixes_every_line_and_lists_headers()
    {
        var block = TraceFormatter.DebugText(Record);
        var lines = block.Split('\n');
        Assert.All(lines, l => Assert.StartsWith("DEBUG: http://minio2:9000 ", l, StringComparison.Ordinal));
        Assert.Contains("DEBUG: http://minio2:9000 GET /bucket/obj?versionId=1", block, StringComparison.Ordinal);
        Assert.Contains("Authorization: REDACTED", block, StringComparison.Ordinal);
        Assert.Contains("200 OK", block, StringComparison.Ordinal);
    }

    [Fact]
    public void Short_json_has_upstream_fields_and_no_ansi()
    {
        var json = JsonDocument.Parse(new TraceFormatter(new ConsoleMode(true, true, false, true, false)).Format(Record)).RootElement;
        Assert.Equal("TRACE", json.GetProperty("type").GetString());
        Assert.Equal("http://minio2:9000", json.GetProperty("host").GetString());
        Assert.Equal(200, json.GetProperty("statusCode").GetInt32());
        Assert.Equal("OK", json.GetProperty("statusMsg").GetString());
        Assert.Equal(1_234_000, json.GetProperty("callStats").GetProperty("latency").GetInt64());
        Assert.Equal(512, json.GetProperty("callStats").GetProperty("rx").GetInt64());
        Assert.Equal("versionId=1", json.GetProperty("query").GetString());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Bidirectional_controls_a_client_sends_are_escaped_in_json_lines(bool debug)
    {
        // U+202E and the isolates reorder what a terminal shows of the rest of the line ("Trojan Source"): a log read
        // with cat or less would show another path than the one asked for. Other non-ASCII text stays readable.
        var record = Record with { Path = "/bucket/\u202Etxt.exe\u2066x\u2069\u200F\u061Cé" };
        var line = new TraceFormatter(Mode(json: true, debug: debug)).Format(record);

        foreach (var control in new[] { "\u202E", "\u2066", "\u2069", "\u200F", "\u061C" })
        {
            Assert.DoesNotContain(control, line, StringComparison.Ordinal);
        }

        Assert.Contains("\\u202E", line, StringComparison.Ordinal);
        Assert.Contains("é", line, StringComparison.Ordinal);
        var json = JsonDocument.Parse(line).RootElement;
        var path = debug ? json.GetProperty("request").GetProperty("path").GetString() : json.GetProperty("path").GetString();
        Assert.StartsWith(record.Path, path, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Bidirectional_controls_and_marks_a_client_sends_are_escaped_in_text_lines(bool debug)
    {
        // The marks (U+200E, U+200F, U+061C) reorder what a terminal shows as the overrides do.
        var record = Record with { Path = "/bucket/\u202Etxt.exe\u2066x\u2069\u200F\u061C\u200Eé" };
        var line = new TraceFormatter(Mode(json: false, debug: debug)).Format(record);

        foreach (var control in new[] { "\u202E", "\u2066", "\u2069", "\u200F", "\u061C", "\u200E" })
        {
            Assert.DoesNotContain(control, line, StringComparison.Ordinal);
        }

        Assert.Contains("%u200F%u061C%u200E", line, StringComparison.Ordinal);
        Assert.Contains("é", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Full_json_has_request_response_and_stats()
    {
        var json = JsonDocument.Parse(new TraceFormatter(Mode(json: true, debug: true)).Format(Record)).RootElement;
        Assert.Equal("DEBUG", json.GetProperty("type").GetString());
        Assert.Equal("http://minio2:9000", json.GetProperty("nodename").GetString());
        Assert.Equal("REDACTED", json.GetProperty("request").GetProperty("headers").GetProperty("Authorization")[0].GetString());
        Assert.Equal(200, json.GetProperty("response").GetProperty("statuscode").GetInt32());
        Assert.Equal(1_000_000, json.GetProperty("stats").GetProperty("timetofirstbyte").GetInt64());
    }

    [Theory]
    [InlineData("all", false, new int[0], 200, "/x", true)]
    [InlineData("all", true, new int[0], 200, "/x", false)]
    [InlineData("all", true, new int[0], 503, "/x", true)]
    [InlineData("all", false, new[] { 404 }, 503, "/x", false)]
    [InlineData("all", false, new[] { 404, 503 }, 503, "/x", true)]
    [InlineData("minio", false, new int[0], 200, "/x", false)]
    [InlineData("minio", false, new int[0], 200, "/minio/health/ready", true)]
    [InlineData("", false, new int[0], 200, "/x", false)]
    public void Filters(string trace, bool errors, int[] codes, int status, string path, bool printed)
    {
        var options = new SidekickOptions { Trace = trace, ErrorsOnly = errors, StatusCodes = codes };
        var sink = new TraceSink(options, Mode(), new OutputQueue(TextWriter.Null, new TraceFormatter(Mode())));
        Assert.Equal(printed, sink.ShouldPrint(Record with { StatusCode = status, Path = path }));
    }

    [Fact]
    public async Task A_stuck_console_drops_and_counts_records_instead_of_blocking_requests()
    {
        var console = new StuckWriter();
        var queue = new OutputQueue(console, new TraceFormatter(Mode(json: true)));
        var enqueue = Task.Run(() =>
        {
            for (var i = 0; i < 50_000; i++)
            {
                queue.Enqueue(Record);
            }
        });

        // Enqueueing never waits on the console, so it finishes while the console is still stuck.
        Assert.Same(enqueue, await Task.WhenAny(enqueue, Task.Delay(TimeSpan.FromSeconds(10))));
        // The queue holds 16,384 entries, the batch the stuck writer holds included; every later one was dropped.
        Assert.Equal(50_000 - OutputQueue.MaxPendingEntries, queue.Dropped);
        console.Release();
        await queue.DisposeAsync();
        Assert.StartsWith("{\"type\":\"TRACE\"", console.First);
    }

    [Fact]
    public async Task A_console_that_fails_counts_the_lost_records_and_shuts_down_cleanly()
    {
        var queue = new OutputQueue(new BrokenWriter(), new TraceFormatter(Mode()));
        for (var i = 0; i < 100; i++)
        {
            queue.Enqueue(Record);
        }

        await queue.DisposeAsync();
        Assert.Equal(100, queue.Dropped);
    }

    /// <summary>A console whose reader went away (stdout piped into a program that exited).</summary>
    private sealed class BrokenWriter : TextWriter
    {
        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;

        public override Task WriteAsync(System.Text.StringBuilder? value, CancellationToken cancellationToken = default) =>
            throw new IOException("Broken pipe");
    }

    /// <summary>A console whose first write hangs until released, as a terminal stopped with Ctrl-S.</summary>
    private sealed class StuckWriter : TextWriter
    {
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string? First { get; private set; }

        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;

        public void Release() => _released.TrySetResult();

        public override async Task WriteAsync(System.Text.StringBuilder? value, CancellationToken cancellationToken = default)
        {
            First ??= value?.ToString();
            await _released.Task;
        }
    }

    [Fact]
    public void Application_trace_skips_probes()
    {
        var sink = new TraceSink(new SidekickOptions { Trace = "application" }, Mode(), new OutputQueue(TextWriter.Null, new TraceFormatter(Mode())));
        Assert.False(sink.ShouldPrint(Record with { IsProbe = true }));
        Assert.True(sink.ShouldPrint(Record));
    }

    [Fact]
    public void State_log_lines_text_and_json()
    {
        var backend = new Backend(new BackendDefinition(new Uri("http://m1:9000"), "http://m1:9000", new Uri("http://m1:9000/h")), 1, TimeProvider.System);
        var at = new DateTimeOffset(2026, 1, 1, 12, 0, 1, 123, TimeSpan.Zero);
        var text = new StateLog(Mode(), new OutputQueue(TextWriter.Null, new TraceFormatter(Mode())));
        Assert.Equal("LOG  : 12:00:01.123  http://m1:9000 is down: connection refused",
            text.Format(backend, new BackendTransition(false, at, null, "connection refused")));
        Assert.Equal("LOG  : 12:00:01.123  http://m1:9000 is up Downtime duration: 5.333s",
            text.Format(backend, new BackendTransition(true, at, TimeSpan.FromMilliseconds(5333), null)));

        var json = JsonDocument.Parse(new StateLog(Mode(json: true), new OutputQueue(TextWriter.Null, new TraceFormatter(Mode())))
            .Format(backend, new BackendTransition(true, at, TimeSpan.FromMilliseconds(5333), null))).RootElement;
        Assert.Equal("LOG", json.GetProperty("Type").GetString());
        Assert.Equal("up", json.GetProperty("Status").GetString());
        Assert.Equal(5_333_000_000, json.GetProperty("Downtime").GetInt64());
        Assert.False(json.TryGetProperty("Error", out _));
    }

    [Fact]
    public void A_state_line_quoting_a_backend_or_the_store_stays_one_line_without_escape_sequences()
    {
        var backend = new Backend(new BackendDefinition(new Uri("http://m1:9000"), "http://m1:9000", new Uri("http://m1:9000/h")), 1, TimeProvider.System);
        var at = new DateTimeOffset(2026, 1, 1, 12, 0, 1, 123, TimeSpan.Zero);
        var text = new StateLog(Mode(), new OutputQueue(TextWriter.Null, new TraceFormatter(Mode())));
        const string Hostile = "bad\r\nLOG  : 12:00:00.000  http://m2:9000 is up\u001b[2J";

        Assert.Equal("LOG  : 12:00:01.123  http://m1:9000 is down: bad%0D%0ALOG  : 12:00:00.000  http://m2:9000 is up%1B[2J",
            text.Format(backend, new BackendTransition(false, at, null, Hostile)));
        Assert.Equal("LOG  : 12:00:01.123  cache store http://s3:9000 bucket b unreachable: bad%0D%0ALOG  : 12:00:00.000  http://m2:9000 is up%1B[2J",
            text.Format(new Uri("http://s3:9000"), "b", new Sidekick.Caching.CacheHealthTransition(
                false, at, new Sidekick.Caching.CacheStoreFailure(Sidekick.Caching.CacheStoreFailureReason.Unreachable, Hostile), null, false)));
    }

    [Fact]
    public void A_long_client_address_moves_the_columns_by_one_space_not_by_its_length()
    {
        // Longer than ClientOf keeps: the formatters are the last line of defence.
        var record = Record with { Client = new string('a', 1_000) };
        var expected = $"   LOG: 12:00:00.123 [200 OK]  http://minio2:9000 GET /bucket/obj?versionId=1 {record.Client}    1.234ms      ↑ 512 B ↓ 1.0 MiB";
        Assert.Equal(expected, new TraceFormatter(Mode()).ShortText(record));
        var direct = new System.Buffers.ArrayBufferWriter<byte>();
        Assert.True(ShortTextLine.TryWrite(record, false, direct));
        Assert.Equal(expected, System.Text.Encoding.UTF8.GetString(direct.WrittenSpan));
    }

    [Fact]
    public void A_huge_forwarded_for_is_logged_as_its_first_entry_cut_to_a_sane_length()
    {
        var context = FromTrustedProxy();
        var first = new string('1', 30_000);
        context.Request.Headers["X-Forwarded-For"] = first + ", 5.6.7.8";
        Assert.Equal(new string('1', TraceSink.MaxClientLength) + "...", TraceSink.ClientOf(context));
        context.Request.Headers["X-Forwarded-For"] = "fe80::1%eth0-with-a-long-zone-name-0123456789abcdef, 5.6.7.8";
        Assert.Equal("fe80::1%eth0-with-a-long-zone-name-0123456789abcdef", TraceSink.ClientOf(context));
        context.Request.Headers.Remove("X-Forwarded-For");
        context.Request.Headers["X-Real-IP"] = first;
        Assert.Equal(TraceSink.MaxClientLength + 3, TraceSink.ClientOf(context).Length);
    }

    [Theory]
    [InlineData("1.2.3.4, 5.6.7.8", null, "1.2.3.4")]
    [InlineData(null, "9.9.9.9", "9.9.9.9")]
    [InlineData("[2001:db8::1]:443", null, "2001:db8::1")]
    [InlineData("2001:db8::1", null, "2001:db8::1")]
    [InlineData("10.0.0.1:5555", null, "10.0.0.1")]
    public void Client_address_is_ipv6_safe(string? xff, string? realIp, string expected)
    {
        var context = FromTrustedProxy();
        if (xff is not null)
        {
            context.Request.Headers["X-Forwarded-For"] = xff;
        }

        if (realIp is not null)
        {
            context.Request.Headers["X-Real-IP"] = realIp;
        }

        Assert.Equal(expected, TraceSink.ClientOf(context));
    }

    [Fact]
    public void A_peer_that_is_not_a_trusted_proxy_is_logged_as_itself_whatever_it_claims()
    {
        var context = new DefaultHttpContext();
        context.Connection.RemoteIpAddress = System.Net.IPAddress.Parse("192.0.2.10");
        context.Request.Headers["X-Forwarded-For"] = "6.6.6.6";
        context.Request.Headers["X-Real-IP"] = "6.6.6.7";
        Assert.Equal("192.0.2.10", TraceSink.ClientOf(context));
    }

    /// <summary>A request from loopback, a trusted proxy by default: its forwarding fields name the client.</summary>
    private static DefaultHttpContext FromTrustedProxy()
    {
        var context = new DefaultHttpContext();
        context.Connection.RemoteIpAddress = System.Net.IPAddress.Loopback;
        return context;
    }
}
