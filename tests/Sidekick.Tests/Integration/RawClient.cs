using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Sidekick.Tests.Integration;

/// <summary>A client on a bare socket: sends exactly the bytes given and reads the answers as they come.</summary>
internal static class RawClient
{
    /// <summary>Sends <paramref name="request"/> (and <paramref name="then"/> on the same connection) and reads the answers.</summary>
    public static async Task<RawAnswer> ExchangeAsync(int port, string request, string? then = null)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        var stream = tcp.GetStream();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var reader = new ResponseReader(stream, timeout.Token);
        await stream.WriteAsync(Encoding.Latin1.GetBytes(request), timeout.Token);
        var (status, head, body) = await reader.ReadAsync();
        RawAnswer? next = null;
        if (then is not null)
        {
            await stream.WriteAsync(Encoding.Latin1.GetBytes(then), timeout.Token);
            var (nextStatus, nextHead, nextBody) = await reader.ReadAsync();
            next = new RawAnswer(nextStatus, nextHead, nextBody, null);
        }

        return new RawAnswer(status, head, body, next);
    }

    /// <summary>Reads HTTP/1.1 responses framed by Content-Length or chunked off one connection.</summary>
    internal sealed class ResponseReader(NetworkStream stream, CancellationToken cancellationToken)
    {
        private readonly List<byte> _buffered = [];

        public async Task<(int Status, string Head, string Body)> ReadAsync()
        {
            var headEnd = await FillUntilAsync(() => IndexOf("\r\n\r\n"u8));
            var head = Encoding.Latin1.GetString(_buffered.GetRange(0, headEnd + 4).ToArray());
            _buffered.RemoveRange(0, headEnd + 4);
            var status = int.Parse(head.AsSpan(9, 3), System.Globalization.CultureInfo.InvariantCulture);
            var body = new StringBuilder();
            if (head.Contains("\r\nTransfer-Encoding: chunked\r\n", StringComparison.OrdinalIgnoreCase))
            {
                while (true)
                {
                    var lineEnd = await FillUntilAsync(() => IndexOf("\r\n"u8));
                    var size = Convert.ToInt32(Encoding.Latin1.GetString(_buffered.GetRange(0, lineEnd).ToArray()).Split(';')[0], 16);
                    await FillUntilAsync(() => _buffered.Count >= lineEnd + 2 + size + 2 ? 0 : -1);
                    body.Append(Encoding.Latin1.GetString(_buffered.GetRange(lineEnd + 2, size).ToArray()));
                    _buffered.RemoveRange(0, lineEnd + 2 + size + 2);
                    if (size == 0)
                    {
                        break;
                    }
                }
            }
            else
            {
                var lengthLine = head.Split("\r\n").FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
                var length = lengthLine is null ? 0 : int.Parse(lengthLine.AsSpan(15).Trim(), System.Globalization.CultureInfo.InvariantCulture);
                await FillUntilAsync(() => _buffered.Count >= length ? 0 : -1);
                body.Append(Encoding.Latin1.GetString(_buffered.GetRange(0, length).ToArray()));
                _buffered.RemoveRange(0, length);
            }

            return (status, head, body.ToString());
        }

        private int IndexOf(ReadOnlySpan<byte> value) => _buffered.ToArray().AsSpan().IndexOf(value);

        private async Task<int> FillUntilAsync(Func<int> found)
        {
            var buffer = new byte[64 * 1024];
            int at;
            while ((at = found()) < 0)
            {
                var read = await stream.ReadAsync(buffer, cancellationToken);
                if (read == 0)
                {
                    throw new IOException($"the connection closed; received so far: {Encoding.Latin1.GetString(_buffered.ToArray())}");
                }

                _buffered.AddRange(buffer.AsSpan(0, read));
            }

            return at;
        }
    }
}

/// <summary>One response read off the wire: status, head (with its blank line) and body.</summary>
internal sealed record RawAnswer(int Status, string Head, string Body, RawAnswer? Next)
{
    /// <summary>The values of every line of the named field, in order, as they came.</summary>
    public string[] Values(string name) => Head.Split("\r\n")
        .Where(l => l.StartsWith(name + ":", StringComparison.OrdinalIgnoreCase))
        .Select(l => l[(name.Length + 1)..].TrimStart(' ', '\t'))
        .ToArray();
}
