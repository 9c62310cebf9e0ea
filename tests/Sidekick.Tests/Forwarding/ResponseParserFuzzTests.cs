using System.Diagnostics;
using System.Text;
using Microsoft.AspNetCore.Http;
using Sidekick.Forwarding.Http1;
using Xunit.Abstractions;

namespace Sidekick.Tests.Forwarding;

/// <summary>
/// Mutation fuzzing of the HTTP/1.1 path's response parsers (head and chunked body), seeded with the
/// response corpus, for a bounded time in the suite (SIDEKICK_FUZZ_SECONDS for a longer run). Properties:
/// only the parsers' own "invalid response" errors escape; a refused head applies nothing; a chunked body
/// decodes to the same bytes and ends at the same offset whether it arrives whole or in pieces (so the
/// connection is never read out of step); framing is consistent with reuse; no header value applied holds a NUL,
/// a CR or a LF.
/// </summary>
public sealed class ResponseParserFuzzTests(ITestOutputHelper output)
{
    private static readonly byte[][] Tokens =
    [
        "\r\n"u8.ToArray(), "\n"u8.ToArray(), "\r"u8.ToArray(), " "u8.ToArray(), "\t"u8.ToArray(), ":"u8.ToArray(), ";"u8.ToArray(),
        "\0"u8.ToArray(), [0x7F], [0xFF], "0"u8.ToArray(), "f"u8.ToArray(), "-"u8.ToArray(), "+"u8.ToArray(), ","u8.ToArray(),
        "Content-Length: 5\r\n"u8.ToArray(), "Transfer-Encoding: chunked\r\n"u8.ToArray(), "Connection: close\r\n"u8.ToArray(),
        "0\r\n\r\n"u8.ToArray(), "\r\n\r\n"u8.ToArray(), "HTTP/1.1 "u8.ToArray(), "FFFFFFFFFFFFFFFF"u8.ToArray(),
    ];

    [Fact]
    public void Mutated_responses_never_break_the_parsers()
    {
        var seconds = int.TryParse(Environment.GetEnvironmentVariable("SIDEKICK_FUZZ_SECONDS"), out var s) ? s : 3;
        var seed = int.TryParse(Environment.GetEnvironmentVariable("SIDEKICK_FUZZ_SEED"), out var fixedSeed) ? fixedSeed : 25;
        var random = new Random(seed);
        var seeds = ResponseCorpus.Load().Where(c => c.Bytes.Length < 64 * 1024).Select(c => c.Bytes).ToArray();
        var values = new ResponseHeaderValues();
        long inputs = 0, refusedHeads = 0, chunkedBodies = 0, refusedBodies = 0;
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(seconds))
        {
            var input = Mutate(seeds[random.Next(seeds.Length)], seeds, random);
            inputs++;
            try
            {
                switch (Exercise(input, values, random))
                {
                    case Result.RefusedHead:
                        refusedHeads++;
                        break;
                    case Result.Chunked:
                        chunkedBodies++;
                        break;
                    case Result.RefusedBody:
                        chunkedBodies++;
                        refusedBodies++;
                        break;
                }
            }
            catch (Exception ex) when (ex is not Xunit.Sdk.XunitException)
            {
                Assert.Fail($"input {inputs} (seed {seed}) broke the parser: {ex}\n{Convert.ToHexString(input)}\n{Encoding.Latin1.GetString(input)}");
            }
        }

        output.WriteLine($"{inputs:N0} inputs in {watch.Elapsed.TotalSeconds:0.0} s (seed {seed}): {refusedHeads:N0} heads refused, " +
            $"{chunkedBodies:N0} chunked bodies decoded whole and in pieces, {refusedBodies:N0} of them refused");
        Assert.True(inputs > 1000, $"only {inputs} inputs were tried");
    }

    private enum Result
    {
        Incomplete,
        RefusedHead,
        Accepted,
        Chunked,
        RefusedBody,
    }

    private static Result Exercise(byte[] input, ResponseHeaderValues values, Random random)
    {
        int end;
        try
        {
            end = ResponseHead.FindEnd(input);
        }
        catch (HttpRequestException ex) when (ex.HttpRequestError == HttpRequestError.InvalidResponse)
        {
            return Result.RefusedHead; // more field lines than the limit
        }

        if (end < 0)
        {
            return Result.Incomplete;
        }

        Assert.InRange(end, 1, input.Length);
        var response = new DefaultHttpContext().Response;
        ResponseHead head;
        try
        {
            head = ResponseHead.Apply(input.AsSpan(0, end), response, isHeadRequest: false, values);
        }
        catch (HttpRequestException ex) when (ex.HttpRequestError == HttpRequestError.InvalidResponse)
        {
            Assert.Empty(response.Headers); // refused before anything was applied
            return Result.RefusedHead;
        }

        Assert.InRange(response.StatusCode, 200, 999);
        foreach (var (name, applied) in response.Headers)
        {
            foreach (var value in applied)
            {
                // RFC 9110 §5.5: what reaches the client's head never holds a NUL, a CR or a LF.
                Assert.True(value is null || value.AsSpan().IndexOfAny('\0', '\r', '\n') < 0, $"{name}: {value}");
            }
        }

        Assert.False(head.Reusable && head.Framing == BodyFraming.UntilClose, "a connection read until close cannot be reused");
        if (head.Framing == BodyFraming.ContentLength)
        {
            Assert.True(head.ContentLength > 0);
        }

        if (head.Framing != BodyFraming.Chunked)
        {
            return Result.Accepted;
        }

        var body = input.AsSpan(end).ToArray();
        var whole = Decode(body, [body.Length]);
        var cuts = Enumerable.Range(0, random.Next(1, 6)).Select(_ => random.Next(0, body.Length + 1)).Append(body.Length).Order().ToArray();
        var pieces = Decode(body, cuts);
        Assert.Equal(whole.Outcome, pieces.Outcome);
        if (whole.Outcome != "invalid")
        {
            Assert.Equal(whole.Data, pieces.Data);
            Assert.Equal(whole.Consumed, pieces.Consumed);
        }

        return whole.Outcome == "invalid" ? Result.RefusedBody : Result.Chunked;
    }

    /// <summary>Decodes as the forwarder does: what has arrived so far, minus what was consumed, at each step.</summary>
    private static (string Outcome, string Data, int Consumed) Decode(byte[] body, int[] arrivals)
    {
        var decoder = default(ChunkedDecoder);
        var data = new StringBuilder();
        var position = 0;
        var arrival = 0;
        try
        {
            while (true)
            {
                var available = arrivals[arrival];
                var step = decoder.Next(body.AsSpan(position, available - position), out var consumed, out var dataStart, out var dataLength);
                Assert.InRange(consumed, 0, available - position);
                if (step == ChunkedDecoder.Step.Data)
                {
                    Assert.True(dataLength > 0 && dataStart + dataLength <= consumed);
                    data.Append(Encoding.Latin1.GetString(body, position + dataStart, dataLength));
                }

                position += consumed;
                if (step == ChunkedDecoder.Step.Done)
                {
                    return ("done", data.ToString(), position);
                }

                if (step == ChunkedDecoder.Step.NeedMore)
                {
                    if (arrival == arrivals.Length - 1)
                    {
                        return ("need more", data.ToString(), position);
                    }

                    arrival++;
                }
            }
        }
        catch (HttpIOException ex) when (ex.HttpRequestError == HttpRequestError.InvalidResponse)
        {
            return ("invalid", data.ToString(), position);
        }
    }

    private static byte[] Mutate(byte[] start, byte[][] seeds, Random random)
    {
        var bytes = new List<byte>(start);
        for (var i = random.Next(1, 5); i > 0; i--)
        {
            var at = bytes.Count == 0 ? 0 : random.Next(bytes.Count);
            switch (random.Next(8))
            {
                case 0 when bytes.Count > 0:
                    bytes[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1 when bytes.Count > 0:
                    bytes[at] = Tokens[random.Next(11)][0];
                    break;
                case 2:
                    bytes.InsertRange(at, Tokens[random.Next(Tokens.Length)]);
                    break;
                case 3 when bytes.Count > 0:
                    bytes.RemoveRange(at, random.Next(1, Math.Min(16, bytes.Count - at) + 1));
                    break;
                case 4 when bytes.Count > 0:
                    var length = random.Next(1, Math.Min(32, bytes.Count - at) + 1);
                    bytes.InsertRange(at, bytes.GetRange(at, length));
                    break;
                case 5 when bytes.Count > 0:
                    bytes.RemoveRange(at, bytes.Count - at);
                    break;
                case 6:
                    var other = seeds[random.Next(seeds.Length)];
                    var from = random.Next(other.Length + 1);
                    bytes.InsertRange(at, other.AsSpan(from, random.Next(0, other.Length - from + 1)).ToArray());
                    break;
                default:
                    if (bytes.Count > 0)
                    {
                        bytes[at] = (byte)random.Next(256);
                    }

                    break;
            }
        }

        return [.. bytes];
    }
}
