using System.Text;

namespace Sidekick.Tests.Forwarding;

/// <summary>
/// Backend responses that are malformed, odd or merely unusual (Forwarding/ResponseCorpus/*.http, byte for
/// byte), plus one generated case too large to keep in the repository. A name ending in <c>.close</c> means
/// the backend closes the connection after sending it.
/// </summary>
internal static class ResponseCorpus
{
    public static IReadOnlyList<(string Name, byte[] Bytes, bool Close)> Load()
    {
        var directory = Path.Combine(AppContext.BaseDirectory, "Forwarding", "ResponseCorpus");
        var cases = Directory.GetFiles(directory, "*.http")
            .Select(path => Path.GetFileNameWithoutExtension(path))
            .Order(StringComparer.Ordinal)
            .Select(name => (name, File.ReadAllBytes(Path.Combine(directory, name + ".http")), name.EndsWith(".close", StringComparison.Ordinal)))
            .ToList();
        cases.Add(("oversized-head", OversizedHead(), false));
        cases.Add(("too-many-field-lines", TooManyFieldLines(), false));
        return cases;
    }

    /// <summary>A head over the 1 MiB limit both paths keep (Go's).</summary>
    private static byte[] OversizedHead()
    {
        var head = new StringBuilder("HTTP/1.1 200 OK\r\n");
        for (var i = 0; i < 1100; i++)
        {
            head.Append("X-Fill-").Append(i).Append(": ").Append('v', 1000).Append("\r\n");
        }

        return Encoding.ASCII.GetBytes(head.Append("Content-Length: 2\r\n\r\nok").ToString());
    }

    /// <summary>A head of 10 KiB in 2,000 field lines, past the HTTP/1.1 path's limit on lines (not on bytes).</summary>
    private static byte[] TooManyFieldLines() =>
        Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + string.Concat(Enumerable.Repeat("a: b\r\n", 2000)) + "\r\nok");
}
