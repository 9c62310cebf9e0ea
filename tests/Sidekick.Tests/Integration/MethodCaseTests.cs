using System.Net;
using System.Net.Sockets;
using System.Text;
using Sidekick.Hosting;
using Sidekick.Topology;

namespace Sidekick.Tests.Integration;

/// <summary>
/// A standard method in another case (<c>head</c>). Methods are case-sensitive (RFC 9110 §9.1): a backend may take
/// <c>head</c> for an unknown method and answer it with a body, while ASP.NET's checks took it for HEAD, so the
/// HTTP/1.1 forwarder read no body and pooled the connection with the body still to come, which the next client's
/// request on it then received as its answer (and Kestrel, taking <c>head</c> for a method of its own, answered the
/// attacker 500). Such a method is refused at the edge, on every path.
/// </summary>
public sealed class MethodCaseTests
{
    private const string Planted = "HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\nattacker-chosen-bytes!";

    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task A_lowercase_head_is_refused_and_leaves_nothing_for_the_next_client(string forwarder)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var stop = new CancellationTokenSource();
        var heads = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var serving = ServeAsync(listener, heads, stop.Token);
        var url = new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}");
        SiteDefinition[] sites = [new(1, [new BackendDefinition(url, url.ToString().TrimEnd('/'), new Uri(url + "health"))])];
        await using (var sidekick = await SidekickHarness.StartAsync(SidekickHarness.FastOptions with { MaxAttempts = 1 }, sites,
                         new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) }))
        {
            using (var tcp = new TcpClient())
            {
                await tcp.ConnectAsync(IPAddress.Loopback, sidekick.BaseAddress.Port);
                var stream = tcp.GetStream();
                await stream.WriteAsync("head /bucket/planted HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"u8.ToArray());
                using var answer = new MemoryStream();
                await stream.CopyToAsync(answer).WaitAsync(TimeSpan.FromSeconds(30));
                Assert.StartsWith("HTTP/1.1 400 ", Encoding.Latin1.GetString(answer.ToArray()), StringComparison.Ordinal);
            }

            for (var i = 1; i <= 3; i++)
            {
                using var response = await sidekick.Client.GetAsync($"/victim{i}");
                Assert.Equal($"fresh for /victim{i}", await response.Content.ReadAsStringAsync());
            }
        }

        Assert.DoesNotContain(heads, line => line.Contains("planted", StringComparison.Ordinal));
        await stop.CancelAsync();
        listener.Stop();
        await serving;
    }

    /// <summary>
    /// A backend that takes the method as sent: HEAD gets a head alone; <c>head</c>, an unknown method to it, gets a
    /// head and then a body (shaped like a response: an object the attacker stored) once the connection's next request
    /// has arrived, as a streaming server sends it after its head; GETs get their own path back.
    /// </summary>
    private static async Task ServeAsync(TcpListener listener, System.Collections.Concurrent.ConcurrentQueue<string> heads, CancellationToken stop)
    {
        var connections = new List<Task>();
        try
        {
            while (true)
            {
                var socket = await listener.AcceptSocketAsync(stop);
                connections.Add(ServeConnectionAsync(socket, heads));
            }
        }
        catch (OperationCanceledException)
        {
        }

        await Task.WhenAll(connections).WaitAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
    }

    private static async Task ServeConnectionAsync(Socket socket, System.Collections.Concurrent.ConcurrentQueue<string> heads)
    {
        using var _ = socket;
        var connection = new ScriptedConnection(socket);
        try
        {
            while (await connection.NextHeadAsync() is { } head)
            {
                var line = head.Split("\r\n")[0];
                if (!line.StartsWith("GET /health", StringComparison.Ordinal))
                {
                    heads.Enqueue(line);
                }

                if (line.StartsWith("head ", StringComparison.Ordinal))
                {
                    await connection.SendAsync($"HTTP/1.1 200 OK\r\nContent-Length: {Planted.Length}\r\n\r\n");
                    // The body follows once the next request is on this connection (or the peer closed it).
                    if (connection.Pending == 0 && !await connection.ReceiveAsync().WaitAsync(TimeSpan.FromSeconds(20)))
                    {
                        return;
                    }

                    await connection.SendAsync(Planted);
                }
                else if (line.StartsWith("HEAD ", StringComparison.Ordinal))
                {
                    await connection.SendAsync($"HTTP/1.1 200 OK\r\nContent-Length: {Planted.Length}\r\n\r\n");
                }
                else
                {
                    var body = line.StartsWith("GET /health", StringComparison.Ordinal) ? "" : "fresh for " + line.Split(' ')[1];
                    await connection.SendAsync($"HTTP/1.1 200 OK\r\nContent-Length: {body.Length}\r\n\r\n{body}");
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or TimeoutException or ObjectDisposedException)
        {
        }
    }
}
