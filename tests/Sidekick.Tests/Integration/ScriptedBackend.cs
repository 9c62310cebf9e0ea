using System.Net;
using System.Net.Sockets;

namespace Sidekick.Tests.Integration;

/// <summary>
/// A backend on a bare socket whose every request head, on every connection, is answered by the test's script, which
/// writes whatever the behaviour it shows needs: endless interim heads, megabytes of error text, nothing at all.
/// </summary>
internal sealed class ScriptedBackend : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Func<string, Socket, CancellationToken, Task> _answer;

    /// <param name="answer">Called with each request head (without its blank line), the connection, and a token ended by disposal.</param>
    public ScriptedBackend(Func<string, Socket, CancellationToken, Task> answer)
    {
        _answer = answer;
        _listener.Start();
        _ = AcceptAsync();
    }

    public Uri Url => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");

    /// <summary>An answer to a health probe, for scripts that answer the rest some other way.</summary>
    public static Task AnswerProbeAsync(Socket socket, CancellationToken cancellationToken) =>
        socket.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"u8.ToArray(), SocketFlags.None, cancellationToken).AsTask();

    private async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                _ = ServeAsync(await _listener.AcceptSocketAsync(_stop.Token));
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        using var _ = socket;
        var connection = new ScriptedConnection(socket);
        try
        {
            while (await connection.NextHeadAsync() is { } head)
            {
                await _answer(head, socket, _stop.Token);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        _stop.Dispose();
    }
}
