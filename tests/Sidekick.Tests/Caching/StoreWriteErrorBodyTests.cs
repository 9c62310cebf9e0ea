using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Xunit.Abstractions;

namespace Sidekick.Tests.Caching;

/// <summary>
/// A cache store that reads fine (its probe and lookups are answered) but answers every write (the lease, the entry's
/// upload) with an error whose body is 50 MiB, or never ends. The AWS SDK, which sends the writes, read such a body
/// whole into memory: a review measured 720 MB of RSS for 20 MiB of error text. sidekick now reads at most 64 KiB of
/// an error (StoreHttpClients.BoundedAnswers) and reports the failure in one line naming the store's status.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class StoreWriteErrorBodyTests(ITestOutputHelper output)
{
    private const long MaxPeakRssBytes = 150L * 1024 * 1024;

    [Theory]
    [InlineData("50 MiB")]
    [InlineData("endless")]
    public async Task A_write_the_store_answers_with_a_huge_error_body_leaves_memory_bounded_and_is_reported_in_one_line(string errorBody)
    {
        await using var store = new ScriptedBackend(async (head, socket, stop) =>
        {
            if (head.StartsWith("GET ", StringComparison.Ordinal) || head.StartsWith("HEAD ", StringComparison.Ordinal))
            {
                // Reads (the probe, lookups, lease reads): nothing stored.
                var noSuchKey = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><Message>none</Message></Error>";
                var answer = head.StartsWith("HEAD ", StringComparison.Ordinal)
                    ? "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                    : $"HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: {noSuchKey.Length}\r\n\r\n{noSuchKey}";
                await socket.SendAsync(Encoding.ASCII.GetBytes(answer), SocketFlags.None, stop);
                return;
            }

            await AnswerWithHugeErrorAsync(socket, errorBody == "endless", stop);
        });

        await using var origin = new ScriptedBackend(async (head, socket, stop) =>
        {
            var answer = head.StartsWith("GET /health", StringComparison.Ordinal)
                ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                : "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nETag: \"1\"\r\nContent-Length: 2048\r\n\r\n" + new string('o', 2048);
            await socket.SendAsync(Encoding.ASCII.GetBytes(answer), SocketFlags.None, stop);
        });

        var port = SidekickProcess.FreePort();
        var environment = new Dictionary<string, string>
        {
            ["SIDEKICK_CACHE_ENDPOINT"] = store.Url.ToString().TrimEnd('/'),
            ["SIDEKICK_CACHE_ACCESS_KEY"] = "sidekick-test-access-key",
            ["SIDEKICK_CACHE_SECRET_KEY"] = "s",
            ["SIDEKICK_CACHE_BUCKET"] = "cache",
            ["SIDEKICK_CACHE_MIN_SIZE"] = "1KiB",
            ["SIDEKICK_CACHE_HEALTH_DURATION"] = "1s",
        };
        await using var sidekick = SidekickProcess.StartIn(Environment.CurrentDirectory, environment,
            "--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", "--log", origin.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        // Misses, one a second until one is reported: each writes its lease and its entry to the store, which answers
        // every write with the huge error. Without the bound the SDK reads the whole body (50 MiB, or for ever): the
        // peak RSS is watched all along, and the endless body is cut off here by the peak, or by the deadline.
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        var watch = Stopwatch.StartNew();
        string? failure;
        long peak;
        for (var miss = 1; ; miss++)
        {
            // (On two busy cores the origin's probe has timed out once: that miss was a 502, and the next one filled. A
            // first write has also waited for the 60 s write-stall cut now and then, and a miss has once waited past
            // the client's 30 s behind it (an open defect, in the issue notes): a miss not answered in time is not what
            // this test measures, so the next one is sent; hence the deadline of 90 s.)
            try
            {
                using (await client.GetAsync($"http://127.0.0.1:{port}/bucket/object-{miss}"))
                {
                }
            }
            catch (TaskCanceledException)
            {
                output.WriteLine($"miss {miss} had no answer within the client's 30 s");
            }

            var next = watch.Elapsed + TimeSpan.FromSeconds(1);
            do
            {
                peak = PeakRss(sidekick.Process.Id);
                failure = sidekick.Stdout.Split('\n').FirstOrDefault(line => line.Contains("abandoned (store_error)", StringComparison.Ordinal));
                await Task.Delay(50);
            }
            while (failure is null && peak <= MaxPeakRssBytes && watch.Elapsed < next);

            if (failure is not null || peak > MaxPeakRssBytes || watch.Elapsed > TimeSpan.FromSeconds(90))
            {
                break;
            }
        }

        output.WriteLine($"{errorBody}: peak RSS {peak / (1024 * 1024)} MiB after {watch.ElapsedMilliseconds} ms; {failure ?? "no failure line"}");
        foreach (var printed in sidekick.Stdout.Split('\n'))
        {
            output.WriteLine(printed.Length <= 400 ? printed : $"{printed[..400]}… ({printed.Length} characters)");
        }

        Assert.True(peak <= MaxPeakRssBytes, $"{errorBody} error body: sidekick's peak RSS reached {peak / (1024 * 1024)} MiB");
        Assert.True(failure is not null, "no fill was reported given up within 90 s");
        // "HTTP 500 InternalError: …", or "HTTP 500 InternalServerError: …" when the SDK kept none of the body.
        Assert.Contains("HTTP 500 Internal", failure, StringComparison.Ordinal);
        Assert.True(failure.Length < 1024, $"the failure line is {failure.Length} characters long");
    }

    private static async Task AnswerWithHugeErrorAsync(Socket socket, bool endless, CancellationToken stop)
    {
        const long Length = 50L * 1024 * 1024;
        var start = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>";
        var head = endless
            ? "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
            : $"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {Length.ToString(CultureInfo.InvariantCulture)}\r\n\r\n";
        var filler = new byte[64 * 1024];
        Array.Fill(filler, (byte)'x');
        var chunk = endless ? [.. Encoding.ASCII.GetBytes($"{filler.Length:x}\r\n"), .. filler, .. "\r\n"u8] : filler;
        try
        {
            await socket.SendAsync(Encoding.ASCII.GetBytes(head), SocketFlags.None, stop);
            if (endless)
            {
                await socket.SendAsync(Encoding.ASCII.GetBytes($"{start.Length:x}\r\n{start}\r\n"), SocketFlags.None, stop);
            }
            else
            {
                await socket.SendAsync(Encoding.ASCII.GetBytes(start), SocketFlags.None, stop);
            }

            for (long sent = start.Length; endless || sent < Length; sent += filler.Length)
            {
                var last = !endless && Length - sent < filler.Length;
                await socket.SendAsync(last ? chunk.AsMemory(0, (int)(Length - sent)) : chunk, SocketFlags.None, stop);
            }
        }
        finally
        {
            // The client stopped reading (or the body is done): this connection is not reused.
            socket.Close();
        }
    }

    /// <summary>The process's peak resident set (VmHWM), in bytes.</summary>
    private static long PeakRss(int pid)
    {
        var line = File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
    }
}
