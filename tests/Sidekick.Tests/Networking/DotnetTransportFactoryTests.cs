using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Sidekick.Networking;

namespace Sidekick.Tests.Networking;

/// <summary>The .NET engine's transport: Kestrel's socket connections, through sidekick's own accept loop.</summary>
public sealed class DotnetTransportFactoryTests
{
    [Fact]
    public async Task Connections_take_their_buffers_from_kestrels_pools_and_carry_bytes_both_ways()
    {
        // The public options default to a pool over the shared array pool; Kestrel's own transport uses its block pools.
        // The setter is internal: a Kestrel without it would leave the default, and this test says so.
        var pools = new CountingPools();
        var factory = new DotnetTransportFactory(pools, binding: null, shortage: null, TimeProvider.System);
        await using var listener = await factory.BindAsync(new IPEndPoint(IPAddress.Loopback, 0));
        Assert.True(pools.Created > 0);

        using var client = new TcpClient();
        await client.ConnectAsync((IPEndPoint)listener.EndPoint);
        await using var connection = (await listener.AcceptAsync())!;
        await client.GetStream().WriteAsync("ping"u8.ToArray());
        var read = await connection.Transport.Input.ReadAsync();
        Assert.Equal("ping"u8.ToArray(), read.Buffer.ToArray());
        connection.Transport.Input.AdvanceTo(read.Buffer.End);
        await connection.Transport.Output.WriteAsync("pong"u8.ToArray());
        var answer = new byte[4];
        await client.GetStream().ReadExactlyAsync(answer);
        Assert.Equal("pong"u8.ToArray(), answer);
    }

    private sealed class CountingPools : IMemoryPoolFactory<byte>
    {
        public int Created;

        public MemoryPool<byte> Create(MemoryPoolOptions? options = null)
        {
            Interlocked.Increment(ref Created);
            return MemoryPool<byte>.Shared;
        }
    }
}
