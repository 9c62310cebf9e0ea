using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

namespace Sidekick.Networking;

/// <summary>
/// Kestrel's transport on sidekick's event loops: client connections are accepted by a .NET listening
/// socket (accepts are rare) and then served by a <see cref="LoopSocket"/>, so Kestrel parses requests and
/// the proxy forwards them on the loop thread that saw the bytes arrive.
/// </summary>
/// <param name="binding">Told each endpoint before it is bound (so a refused bind can name it).</param>
/// <param name="shortage">Told when accept fails for want of descriptors or socket memory.</param>
internal sealed class LoopTransportFactory(IMemoryPoolFactory<byte> pools, Action<EndPoint>? binding = null, LocalShortage? shortage = null, TimeProvider? time = null)
    : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    /// <summary>Pending connections the kernel queues before accept (Kestrel's default).</summary>
    internal const int Backlog = 512;

    private long _accepted;

    /// <summary>Client connections accepted onto the event loops so far.</summary>
    public long Accepted => Interlocked.Read(ref _accepted);

    public bool CanBind(EndPoint endpoint) => endpoint is IPEndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        var ip = endpoint as IPEndPoint ?? throw new NotSupportedException($"{endpoint} is not an IP endpoint");
        binding?.Invoke(endpoint);
        var socket = new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (ip.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true; // [::] takes IPv4 clients too, as Kestrel's own transport does
            }

            socket.Bind(ip);
            socket.Listen(Backlog);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            socket.Dispose();
            throw new AddressInUseException(ex.Message, ex);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var acceptor = new Acceptor(socket.AcceptAsync, shortage, time ?? TimeProvider.System);
        return ValueTask.FromResult<IConnectionListener>(new LoopListener(this, socket, acceptor, pools.Create(new MemoryPoolOptions()), EventLoops.Shared));
    }

    private sealed class LoopListener(LoopTransportFactory factory, Socket socket, Acceptor acceptor, MemoryPool<byte> pool, EventLoops loops)
        : AcceptingListener(socket, acceptor)
    {
        protected override ConnectionContext Serve(Socket accepted)
        {
            accepted.NoDelay = true;
            Interlocked.Increment(ref factory._accepted);
            var connection = new LoopConnection(LoopSocket.Accepted(accepted, loops.Next()), accepted, pool);
            connection.Start();
            return connection;
        }

        protected override void DisposeTransport() => pool.Dispose();
    }
}
