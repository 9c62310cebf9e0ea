using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Sidekick.Hosting;
using Sidekick.Networking;

namespace Sidekick.Tests.Hosting;

/// <summary>
/// Which client connections get the loop's batched sends: plain ones, and TLS ones that chose HTTP/1.1 (or named
/// nothing); those that chose HTTP/2 gather what is flushed off the loop thread instead.
/// </summary>
public sealed class BatchedSendsTests
{
    [Theory]
    [InlineData(null, true)]
    [InlineData("http/1.1", true)]
    [InlineData("", true)]
    [InlineData("h2", false)]
    public async Task A_connection_serving_http1_has_its_sends_batched_and_http2_gathers_them(string? protocol, bool batched)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        using var accepted = await listener.AcceptAsync();
        await using var connection = new LoopConnection(LoopSocket.Accepted(accepted, EventLoops.Shared.Pick()), accepted, MemoryPool<byte>.Shared);
        Assert.False(connection.SendsDeferred);
        Assert.False(connection.SendsGathered);
        var context = new DefaultConnectionContext();
        if (protocol is not null)
        {
            // A plain connection has no TLS feature at all.
            context.Features.Set<ITlsApplicationProtocolFeature>(new Negotiated(protocol));
        }

        context.Features.Set(connection);
        await PassesThroughAsync(context);
        Assert.Equal(batched, connection.SendsDeferred);
        Assert.Equal(!batched, connection.SendsGathered);
    }

    [Fact]
    public async Task A_connection_not_on_the_event_loops_passes_through()
    {
        var context = new DefaultConnectionContext();
        context.Features.Set<ITlsApplicationProtocolFeature>(new Negotiated("http/1.1"));
        await PassesThroughAsync(context);
    }

    /// <summary>Runs the middleware and checks it handed the connection on.</summary>
    private static async Task PassesThroughAsync(ConnectionContext context)
    {
        var reached = false;
        await BatchedSends.ByProtocol(_ =>
        {
            reached = true;
            return Task.CompletedTask;
        })(context);
        Assert.True(reached);
    }

    private sealed class Negotiated(string protocol) : ITlsApplicationProtocolFeature
    {
        public ReadOnlyMemory<byte> ApplicationProtocol { get; } = System.Text.Encoding.ASCII.GetBytes(protocol);
    }
}
