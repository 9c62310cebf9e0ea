using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;

namespace Sidekick.Tests.Integration;

/// <summary>
/// An HTTP/2 client over TLS on a bare socket, for what HttpClient refuses to send: field names and values holding
/// CR, LF or spaces, targets with spaces. One request per connection, on stream 1; HPACK literals without indexing
/// or Huffman coding, so every byte given is the byte sent.
/// </summary>
internal static class RawHttp2Client
{
    private const byte Data = 0x0, Headers = 0x1, RstStream = 0x3, Settings = 0x4, GoAway = 0x7;
    private const byte EndStream = 0x1, EndHeaders = 0x4;

    /// <summary>The response's status (0 when the stream was reset or the connection went away) and its body.</summary>
    public static async Task<(int Status, string Body)> SendAsync(
        int port, string method, string path, IReadOnlyList<(string Name, string Value)> fields, string? body = null)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        await using var tls = new SslStream(tcp.GetStream());
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "127.0.0.1",
            ApplicationProtocols = [SslApplicationProtocol.Http2],
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        }, timeout.Token);

        var block = new MemoryStream();
        Literal(block, ":method", method);
        Literal(block, ":scheme", "https");
        Literal(block, ":path", path);
        Literal(block, ":authority", "127.0.0.1");
        foreach (var (name, value) in fields)
        {
            Literal(block, name, value);
        }

        var content = body is null ? null : Encoding.Latin1.GetBytes(body);
        if (content is not null)
        {
            Literal(block, "content-length", content.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        var output = new MemoryStream();
        output.Write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
        Frame(output, Settings, 0, 0, []);
        Frame(output, Headers, (byte)(EndHeaders | (content is null ? EndStream : 0)), 1, block.ToArray());
        if (content is not null)
        {
            Frame(output, Data, EndStream, 1, content);
        }

        await tls.WriteAsync(output.ToArray(), timeout.Token);
        await tls.FlushAsync(timeout.Token);

        var status = 0;
        var answer = new StringBuilder();
        var header = new byte[9];
        while (true)
        {
            try
            {
                await tls.ReadExactlyAsync(header, timeout.Token);
            }
            catch (EndOfStreamException)
            {
                return (status, answer.ToString());
            }

            var length = (header[0] << 16) | (header[1] << 8) | header[2];
            var (type, flags) = (header[3], header[4]);
            var stream = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(5)) & int.MaxValue;
            var payload = new byte[length];
            await tls.ReadExactlyAsync(payload, timeout.Token);
            if (type == GoAway || (type == RstStream && stream == 1))
            {
                return (status, answer.ToString());
            }

            if (stream != 1)
            {
                continue;
            }

            if (type == Headers && status == 0)
            {
                status = StatusOf(payload);
            }
            else if (type == Data)
            {
                answer.Append(Encoding.Latin1.GetString(payload));
            }

            if ((flags & EndStream) != 0)
            {
                return (status, answer.ToString());
            }
        }
    }

    /// <summary>A literal field without indexing, new name (RFC 7541 §6.2.2), neither string Huffman coded.</summary>
    private static void Literal(MemoryStream block, string name, string value)
    {
        block.WriteByte(0);
        String(block, Encoding.Latin1.GetBytes(name));
        String(block, Encoding.Latin1.GetBytes(value));
    }

    private static void String(MemoryStream block, byte[] bytes)
    {
        // RFC 7541 §5.1: a 7-bit prefix, then 7 bits a byte.
        var length = bytes.Length;
        if (length < 127)
        {
            block.WriteByte((byte)length);
        }
        else
        {
            block.WriteByte(127);
            length -= 127;
            while (length >= 128)
            {
                block.WriteByte((byte)((length & 127) | 128));
                length >>= 7;
            }

            block.WriteByte((byte)length);
        }

        block.Write(bytes);
    }

    private static void Frame(MemoryStream output, byte type, byte flags, int stream, byte[] payload)
    {
        output.WriteByte((byte)(payload.Length >> 16));
        output.WriteByte((byte)(payload.Length >> 8));
        output.WriteByte((byte)payload.Length);
        output.WriteByte(type);
        output.WriteByte(flags);
        Span<byte> id = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(id, stream);
        output.Write(id);
        output.Write(payload);
    }

    /// <summary>
    /// The status from the first field of a response's header block: Kestrel sends it indexed from the static table
    /// (RFC 7541 Appendix A) or as a literal with the indexed name :status (index 8), unencoded.
    /// </summary>
    private static int StatusOf(byte[] block)
    {
        if ((block[0] & 0x80) != 0)
        {
            return (block[0] & 0x7F) switch
            {
                8 => 200,
                9 => 204,
                10 => 206,
                11 => 304,
                12 => 400,
                13 => 404,
                14 => 500,
                var index => throw new InvalidDataException($"unexpected indexed field {index} first"),
            };
        }

        // 0000 1000 (without indexing) or 0100 1000 (incremental indexing), name index 8; a length, then the digits.
        if ((block[0] & 0x0F) != 8 || (block[1] & 0x80) != 0)
        {
            throw new InvalidDataException("unexpected encoding of :status");
        }

        return int.Parse(Encoding.ASCII.GetString(block, 2, block[1]), System.Globalization.CultureInfo.InvariantCulture);
    }
}
