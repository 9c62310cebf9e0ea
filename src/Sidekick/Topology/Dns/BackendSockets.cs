using System.Net;
using System.Net.Sockets;
using Sidekick.Networking;

namespace Sidekick.Topology.Dns;

/// <summary>Connects to the first of a backend's addresses that accepts, each within the connect timeout.</summary>
internal static class BackendSockets
{
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    public static async ValueTask<Socket> ConnectAsync(IReadOnlyList<IPAddress> addresses, int port, CancellationToken cancellationToken)
    {
        Exception? last = null;
        foreach (var address in addresses)
        {
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(ConnectTimeout);
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, port), timeout.Token);
                return socket;
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                socket.Dispose();
                last = ex is OperationCanceledException ? new SocketException((int)SocketError.TimedOut) : ex;
            }
        }

        throw last ?? new SocketException((int)SocketError.HostNotFound);
    }

    /// <summary>The same, for a socket served by sidekick's event loops (the caller's own loop when it runs on one).</summary>
    public static async ValueTask<LoopSocket> ConnectAsync(IReadOnlyList<IPAddress> addresses, int port, EventLoops loops, CancellationToken cancellationToken)
    {
        Exception? last = null;
        var loop = loops.Pick();
        foreach (var address in addresses)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(ConnectTimeout);
            try
            {
                return await LoopSocket.ConnectAsync(new IPEndPoint(address, port), loop, timeout.Token);
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                last = ex is OperationCanceledException ? new SocketException((int)SocketError.TimedOut) : ex;
            }
        }

        throw last ?? new SocketException((int)SocketError.HostNotFound);
    }
}
