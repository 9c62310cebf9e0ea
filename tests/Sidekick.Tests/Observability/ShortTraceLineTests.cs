using System.Buffers;
using System.Text;
using System.Text.Json;
using Sidekick.Cli;
using Sidekick.Forwarding;
using Sidekick.Observability;

namespace Sidekick.Tests.Observability;

/// <summary>
/// The short trace lines written straight as UTF-8 must be the general formatter's bytes exactly (the JSON writer's,
/// the text builder's), and must never let a request's own text (a path, a query, a method) end a string early and
/// add fields to the line.
/// </summary>
public sealed class ShortTraceLineTests
{
    private static readonly TraceFormatter ShortJson = new(new ConsoleMode(true, false, false, true, false));

    // The golden tests' first record: plain ASCII throughout, so both short lines are written straight as UTF-8.
    private static readonly TraceRecord Plain = TraceGoldenTests.Records[0];

    [Fact]
    public void A_plain_record_is_written_without_the_json_writer_and_as_it_would_write_it()
    {
        var output = new ArrayBufferWriter<byte>();
        Assert.True(ShortJsonLine.TryWrite(Plain, output));
        Assert.Equal(ShortJson.Format(Plain), Encoding.UTF8.GetString(output.WrittenSpan));
    }

    [Fact]
    public void Every_record_is_the_json_writers_bytes_whether_or_not_it_is_plain_ascii() =>
        AssertBatchHoldsTheFormattersLines(ShortJson, r => ShortJsonLine.TryWrite(r, new ArrayBufferWriter<byte>()), seed: 20261206);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_plain_record_is_written_as_the_text_line_the_formatter_builds(bool colors)
    {
        var formatter = new TraceFormatter(new ConsoleMode(true, colors, false, false, false));
        var output = new ArrayBufferWriter<byte>();
        var record = Plain with { StatusCode = 503, Cache = "MISS", Forwarder = new PathChoice(ForwardingPath.Yarp, PathReason.Upgrade) };
        Assert.True(ShortTextLine.TryWrite(record, colors, output));
        Assert.Equal(formatter.ShortText(record), Encoding.UTF8.GetString(output.WrittenSpan));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Every_record_is_the_text_line_the_formatter_builds_whether_or_not_it_is_plain_ascii(bool colors) =>
        AssertBatchHoldsTheFormattersLines(
            new TraceFormatter(new ConsoleMode(true, colors, false, false, false)),
            r => ShortTextLine.TryWrite(r, colors, new ArrayBufferWriter<byte>()),
            seed: 20261207);

    [Theory]
    [InlineData("/x\",\"statusCode\":500,\"y\":\"")]
    [InlineData("/x\\\",\"statusCode\":500,\"y\":\"")]
    [InlineData("/x\\u0022")]
    [InlineData("/x\r\n{\"type\":\"TRACE\",\"statusCode\":500}")]
    [InlineData("/x\u0000\u001f\u007f\u2028</script>")]
    public void A_hostile_path_stays_inside_its_string(string path)
    {
        using var batch = new LineBatch(ShortJson);
        batch.Add(Plain with { Path = path });
        var text = Encoding.UTF8.GetString(batch.Bytes);

        Assert.Single(text.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var json = JsonDocument.Parse(text).RootElement;
        Assert.Equal(path, json.GetProperty("path").GetString());
        Assert.Equal(200, json.GetProperty("statusCode").GetInt32());
        Assert.Equal(1, json.EnumerateObject().Count(p => p.Name == "statusCode"));
    }

    /// <summary>
    /// 5,000 random records through a batch, which writes each short line directly when it can, against the general
    /// formatter's line for each; <paramref name="direct"/> says which records the direct path took.
    /// </summary>
    private static void AssertBatchHoldsTheFormattersLines(TraceFormatter formatter, Func<TraceRecord, bool> direct, int seed)
    {
        var random = new Random(seed);
        using var batch = new LineBatch(formatter);
        var expected = new StringBuilder();
        var plain = 0;
        for (var i = 0; i < 5_000; i++)
        {
            var record = RandomRecord(random);
            plain += direct(record) ? 1 : 0;
            batch.Add(record);
            expected.Append(formatter.Format(record)).Append('\n');
        }

        Assert.Equal(expected.ToString(), Encoding.UTF8.GetString(batch.Bytes));
        // Both ways were taken many times: the comparison covers the direct path, not only the fallback.
        Assert.InRange(plain, 1_000, 4_000);
    }

    private static TraceRecord RandomRecord(Random random) => new()
    {
        IsProbe = random.Next(10) == 0,
        Host = "http://" + Text(random) + ":9000",
        Time = RandomTime(random),
        Client = random.Next(5) == 0 ? "" : Text(random),
        Rx = random.NextInt64(0, long.MaxValue / 1024),
        Tx = random.Next(4) == 0 ? 0 : random.NextInt64(),
        Latency = TimeSpan.FromTicks(random.NextInt64(0, TimeSpan.TicksPerDay)),
        StatusCode = random.Next(8) == 0 ? random.Next(100, 1000) : 200,
        Method = random.Next(4) == 0 ? Text(random) : "GET",
        Path = "/" + Text(random),
        Query = random.Next(3) switch
        {
            0 => "",
            1 => "X-Amz-Signature=abc&part=" + Text(random),
            _ => Text(random),
        },
        ProbeUrl = "http://h/p",
        Cache = random.Next(3) == 0 ? (random.Next(2) == 0 ? "HIT" : Text(random)) : null,
        Forwarder = random.Next(3) == 0 ? null : new PathChoice((ForwardingPath)random.Next(2), (PathReason)random.Next(PathChoice.Reasons.Length)),
        Error = random.Next(6) == 0 ? Text(random) : null,
    };

    /// <summary>Whole seconds, trailing zeros in the fraction, full fractions; now and then a time that is not UTC.</summary>
    private static DateTime RandomTime(Random random)
    {
        var ticks = new DateTime(2026, 1, 1).Ticks + random.NextInt64(0, TimeSpan.TicksPerDay * 3650);
        ticks -= random.Next(4) switch
        {
            0 => ticks % TimeSpan.TicksPerSecond,
            1 => ticks % TimeSpan.TicksPerMillisecond,
            2 => ticks % 10,
            _ => 0,
        };
        var kind = random.Next(10) == 0 ? DateTimeKind.Unspecified : DateTimeKind.Utc;
        return new DateTime(ticks, kind);
    }

    /// <summary>Mostly plain ASCII; sometimes a quote, a backslash, a control character or a non-ASCII one.</summary>
    private static string Text(Random random)
    {
        var length = random.Next(0, 24);
        var text = new StringBuilder(length);
        for (var i = 0; i < length; i++)
        {
            text.Append(random.Next(1000) switch
            {
                0 => '"',
                1 => '\\',
                2 => (char)random.Next(0, 32),
                3 => 'é',
                4 => '\u007f',
                _ => (char)random.Next(' ', '~' + 1),
            });
        }

        return text.ToString();
    }
}
