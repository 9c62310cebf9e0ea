using System.Text;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Observability;

/// <summary>
/// A client must not be able to write lines of its own into the access log, or terminal escape sequences into the
/// console of the operator reading it. The path of a request is percent-decoded, so <c>%0D%0A</c> in the target is a
/// line break in the path; through the real process with <c>--trace all</c> (text, short and --debug) the traced
/// lines must keep every such character escaped, checked on the bytes sidekick wrote to its stdout.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class LogForgingTests
{
    private const string Forged = "/x%0D%0A%20%20%20LOG:%2012:00:00.000%20%5B200%20OK%5D%20forged";
    private const string Escapes = "/y%1B%5B2J%1B%5B31mred%07%7F%C2%9B";
    private const string Separators = "/z%E2%80%A8sep%E2%80%AEevil%0B";

    // A backend's error body is printed by --debug: it must not add lines either.
    private const string ErrorBody = "failed\r\n   LOG: 12:00:00.000 body-line";

    private static RawResponse Respond(RawRequest request) => request.Target.StartsWith("/err", StringComparison.Ordinal)
        ? RawResponse.Text($"HTTP/1.1 500 Internal Server Error\r\nContent-Length: {ErrorBody.Length}\r\n\r\n{ErrorBody}")
        : RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_request_cannot_add_lines_or_escape_sequences_to_the_text_trace(bool debug)
    {
        await using var backend = new RawBackend(Respond);
        var port = SidekickProcess.FreePort();
        var stdout = Path.Combine(Path.GetTempPath(), $"sidekick-forging-{Guid.NewGuid():N}.log");
        string[] args = ["--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "all", .. debug ? new[] { "--debug" } : [], backend.Url.ToString()];
        // Through a shell, so that stdout is a file whose bytes are read as written (the process's own reader splits
        // lines at '\r' too, which would hide a forged line break).
        await using (var sidekick = SidekickProcess.StartUnder(["sh", "-c", $"exec \"$0\" \"$@\" > '{stdout}'"], Environment.CurrentDirectory, new Dictionary<string, string>(), args))
        {
            await sidekick.WaitForHealthAsync(port);
            using var client = new HttpClient();
            foreach (var target in new[] { Forged, Escapes, Separators, "/err" })
            {
                using var response = await client.GetAsync(new Uri($"http://127.0.0.1:{port}{target}"));
            }

            sidekick.Signal("TERM");
            await sidekick.Process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        }

        var bytes = await File.ReadAllBytesAsync(stdout);
        File.Delete(stdout);
        var text = Encoding.UTF8.GetString(bytes);
        Assert.DoesNotContain((byte)0x1B, bytes);
        Assert.DoesNotContain((byte)0x07, bytes);
        Assert.DoesNotContain((byte)'\r', bytes);
        Assert.DoesNotContain((byte)'\v', bytes);
        Assert.DoesNotContain('\u2028', text);
        Assert.DoesNotContain('\u202E', text);
        Assert.DoesNotContain('\u009B', text);

        // Every line is sidekick's own: none starts with what a request or a backend tried to print.
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.DoesNotContain(lines, l => l.StartsWith("   LOG: 12:00:00.000", StringComparison.Ordinal));
        var prefix = debug ? "DEBUG: " : "   LOG: ";
        Assert.All(lines, l => Assert.True(l.StartsWith("sidekick:", StringComparison.Ordinal) || l.StartsWith(prefix, StringComparison.Ordinal), l));

        // The hostile characters are there, escaped, on the line of their request.
        Assert.Contains(lines, l => l.Contains("GET /x%0D%0A   LOG: 12:00:00.000 [200 OK] forged", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("GET /y%1B[2J%1B[31mred%07%7F%9B", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("GET /z%u2028sep%u202Eevil%0B", StringComparison.Ordinal));
        if (debug)
        {
            Assert.Contains(lines, l => l.EndsWith(" failed%0D%0A   LOG: 12:00:00.000 body-line", StringComparison.Ordinal));
        }
    }
}
