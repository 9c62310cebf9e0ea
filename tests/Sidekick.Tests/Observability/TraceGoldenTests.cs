using System.Text;
using System.Text.Json;
using Sidekick.Cli;
using Sidekick.Forwarding;
using Sidekick.Observability;

namespace Sidekick.Tests.Observability;

/// <summary>
/// Every trace shape, byte for byte: TraceGolden.tsv holds what the formatter printed for these records before
/// the trace pipeline was rewritten for speed (issue #27). Users parse these lines; they must not change.
/// </summary>
public sealed class TraceGoldenTests
{
    private static readonly TraceRecord Basic = new()
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
        RequestHeaders = [new("Authorization", ["AWS4-HMAC-SHA256 x"]), new("Host", ["minio2:9000"])],
        ResponseHeaders = [new("Etag", ["\"abc\""]), new("Content-Length", ["1048576"])],
        Forwarder = new PathChoice(ForwardingPath.Http1, PathReason.Plain),
    };

    internal static readonly TraceRecord[] Records =
    [
        Basic,
        // Non-ASCII and quotes in the path, signing parameters to redact, an IPv6 client, every optional field.
        Basic with
        {
            StatusCode = 503, Latency = TimeSpan.FromSeconds(123.5), Rx = 5L << 30, Tx = 0, Client = "2001:db8::1",
            Query = "X-Amz-Signature=abc&x=1&X-Amz-Credential=AK%2Fz", Path = "/bücket/ö \"q\"", Cache = "MISS",
            Forwarder = new PathChoice(ForwardingPath.Yarp, PathReason.BodyOver64K), Error = "resume refused",
            ResponseBody = "<Error><Code>SlowDown</Code></Error>", ResponseTime = new DateTime(2026, 1, 1, 12, 0, 2, 7, DateTimeKind.Utc),
        },
        Basic with { StatusCode = 499, Latency = TimeSpan.FromTicks(7), Rx = 9, Tx = 10, Client = "10.1.2.3", Query = "", Cache = "HIT", Forwarder = null, RequestHeaders = null, ResponseHeaders = [] },
        Basic with
        {
            IsProbe = true, Host = "http://m1:9000", Client = "", Path = "/minio/health/ready", Query = "", StatusCode = 404,
            Latency = TimeSpan.FromMilliseconds(1500.25), Rx = 0, Tx = 1536, Forwarder = null, RequestHeaders = null, ResponseHeaders = null,
        },
        Basic with { StatusCode = 301, Latency = TimeSpan.FromMinutes(61), Rx = 1023, Tx = 10 * 1024 + 500, Client = "a-very-long-client-name.example", Path = "", Query = "a=1;b=%41" },
    ];

    internal static readonly Dictionary<string, ConsoleMode> Modes = new()
    {
        ["text"] = new ConsoleMode(true, false, false, false, false),
        ["color"] = new ConsoleMode(true, true, false, false, false),
        ["debug"] = new ConsoleMode(true, false, false, false, true),
        ["json"] = new ConsoleMode(true, false, false, true, false),
        ["fulljson"] = new ConsoleMode(true, false, false, true, true),
    };

    /// <summary>Mode name, record index, and the recorded output (a JSON string literal in the file).</summary>
    public static TheoryData<string, int, string> Golden()
    {
        var data = new TheoryData<string, int, string>();
        foreach (var line in File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "Observability", "TraceGolden.tsv")))
        {
            var fields = line.Split('\t', 3);
            data.Add(fields[0], int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture), JsonSerializer.Deserialize<string>(fields[2])!);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Golden))]
    public void Every_shape_prints_the_recorded_bytes(string mode, int record, string expected) =>
        Assert.Equal(expected, new TraceFormatter(Modes[mode]).Format(Records[record]));

    /// <summary>The output queue's path: records formatted straight into a reused UTF-8 buffer, one after another.</summary>
    [Theory]
    [MemberData(nameof(Golden))]
    public void A_batch_holds_the_recorded_lines_as_utf8(string mode, int record, string expected)
    {
        using var batch = new LineBatch(new TraceFormatter(Modes[mode]));
        batch.Add(Records[record]);
        batch.Add("a state line");
        batch.Add(Records[record]);
        Assert.Equal(Encoding.UTF8.GetBytes($"{expected}\na state line\n{expected}\n"), batch.Bytes.ToArray());
    }

    /// <summary>A line longer than the reused builder's first chunk, with a surrogate pair on either side of the seam.</summary>
    [Theory]
    [InlineData("/")]
    [InlineData("/a")]
    public void A_character_split_between_chunks_of_a_long_text_line_is_encoded_whole(string prefix)
    {
        var formatter = new TraceFormatter(Modes["text"]);
        var record = Records[0] with { Path = prefix + string.Concat(Enumerable.Repeat("😀", 400)) };
        using var batch = new LineBatch(formatter);
        batch.Add(record);
        Assert.Equal(Encoding.UTF8.GetBytes(formatter.Format(record) + "\n"), batch.Bytes.ToArray());
    }
}
