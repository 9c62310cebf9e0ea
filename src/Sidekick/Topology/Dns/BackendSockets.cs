using System.Net;
using System.Net.Sockets;
using Sidekick.Networking;

namespace Sidekick.Topology.Dns;

/// <summary>Connects to the first of a backend's addresses that accepts, each within the connect timeout.</summary>
internal static class BackendSockets
{
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    public static ValueTask<Socket> ConnectAsync(IReadOnlyList<IPAddress> addresses, int port, CancellationToken cancellationToken) =>
        FirstThatAcceptsAsync(addresses, port, static async (endpoint, timeout) =>
        {
            var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(endpoint, timeout);
                return socket;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }, cancellationToken);

    /// <summary>The same, for a socket served by sidekick's event loops (the caller's own loop when it runs on one).</summary>
    public static ValueTask<LoopSocket> ConnectAsync(IReadOnlyList<IPAddress> addresses, int port, EventLoops loops, CancellationToken cancellationToken)
    {
        var loop = loops.Pick();
        return FirstThatAcceptsAsync(addresses, port, (endpoint, timeout) => LoopSocket.ConnectAsync(endpoint, loop, timeout), cancellationToken);
    }

    private static async ValueTask<T> FirstThatAcceptsAsync<T>(
        IReadOnlyList<IPAddress> addresses, int port, Func<IPEndPoint, CancellationToken, ValueTask<T>> connect, CancellationToken cancellationToken)
    {
        Exception? last = null;
        foreach (var address in addresses)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(ConnectTimeout);
            try
            {
                return await connect(new IPEndPoint(address, port), timeout.Token);
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                last = ex is OperationCanceledException ? new SocketException((int)SocketError.TimedOut) : ex;
            }
        }

        throw last ?? new SocketException((int)SocketError.HostNotFound);
    }
}
