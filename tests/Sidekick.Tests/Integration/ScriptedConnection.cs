using System.Net.Sockets;
using System.Text;

namespace Sidekick.Tests.Integration;

/// <summary>
/// One connection of a backend scripted on a bare socket, read one request at a time, so that a test answers each
/// as the behaviour it shows needs: a body sent late, a close at a chosen moment, stray bytes after a response.
/// </summary>
internal sealed class ScriptedConnection(Socket socket)
{
    private readonly byte[] _buffer = new byte[16 * 1024];
    private int _filled;

    public Socket Socket => socket;

    /// <summary>Bytes received past the last head or body taken: the start of the next request.</summary>
    public int Pending => _filled;

    /// <summary>The next request's head, without the blank line that ends it; null once the peer closed the connection.</summary>
    public async Task<string?> NextHeadAsync()
    {
        int end;
        while ((end = _buffer.AsSpan(0, _filled).IndexOf("\r\n\r\n"u8)) < 0)
        {
            if (!await ReceiveAsync())
            {
                return null;
            }
        }

        var head = Encoding.Latin1.GetString(_buffer, 0, end);
        Take(end + 4);
        return head;
    }

    /// <summary>The next <paramref name="length"/> bytes (a request's body); null when the peer closed first.</summary>
    public async Task<string?> BodyAsync(int length)
    {
        while (_filled < length)
        {
            if (!await ReceiveAsync())
            {
                return null;
            }
        }

        var body = Encoding.Latin1.GetString(_buffer, 0, length);
        Take(length);
        return body;
    }

    /// <summary>Waits for more bytes; false once the peer closed the connection.</summary>
    public async Task<bool> ReceiveAsync()
    {
        var read = await socket.ReceiveAsync(_buffer.AsMemory(_filled));
        _filled += read;
        return read > 0;
    }

    public Task SendAsync(string wire) => socket.SendAsync(Encoding.Latin1.GetBytes(wire));

    private void Take(int count)
    {
        _buffer.AsSpan(count, _filled - count).CopyTo(_buffer);
        _filled -= count;
    }
}
