using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

namespace Sidekick.Networking;

/// <summary>
/// A Kestrel listener that takes client connections through an <see cref="Acceptor"/> (backing off when the process
/// is short of descriptors) and hands each to its transport.
/// </summary>
internal abstract class AcceptingListener(Socket socket, Acceptor acceptor) : IConnectionListener
{
    public EndPoint EndPoint { get; } = socket.LocalEndPoint!;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        while (await acceptor.AcceptAsync(cancellationToken) is { } accepted)
        {
            try
            {
                return Serve(accepted);
            }
            catch (Exception ex) when (ex is SocketException or IOException)
            {
                // That one client is dropped (its socket closed), and accepting goes on: an exception out of here ends
                // Kestrel's accept loop, and the port would never be served again while the process runs. Setting a
                // socket up can fail for want of kernel memory (epoll_ctl ENOMEM near a container's memory limit).
                if (ex is SocketException { SocketErrorCode: var error } && LocalShortage.Is(error))
                {
                    acceptor.Shortage?.Record(ShortageSite.Accept, error);
                }

                accepted.Dispose();
            }
        }

        return null;
    }

    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        acceptor.Stop();
        socket.Dispose();
        return ValueTask.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        acceptor.Stop();
        socket.Dispose();
        DisposeTransport();
        return ValueTask.CompletedTask;
    }

    /// <summary>The transport's connection for an accepted client socket, started.</summary>
    protected abstract ConnectionContext Serve(Socket accepted);

    /// <summary>What the transport holds for all its connections (a memory pool), once the listener is gone.</summary>
    protected abstract void DisposeTransport();
}
