using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Sidekick.Hosting;
using Sidekick.Security;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;
using Sidekick.Tests.Security;

namespace Sidekick.Tests.Hosting;

public sealed class SideListenerTimeoutTests
{
    [Fact]
    public async Task A_connection_that_never_speaks_to_the_admin_listener_is_closed_after_the_header_timeout()
    {
        // docs/configuration.md: "a connection that sends nothing for --client-header-timeout [is] cut". The proxy port
        // does that (FirstByteTimeout); the admin and --pprof listeners (the latter on every interface for ":PORT")
        // keep such a connection for --client-idle-timeout (2m10s by default), and --max-connections counts per listener.
        await using var a = await TestBackend.StartAsync("a");
        var options = SidekickHarness.FastOptions with
        {
            AdminAddress = "127.0.0.1:0",
            Pprof = ":0",
            ClientHeaderTimeout = TimeSpan.FromSeconds(1),
            ClientIdleTimeout = TimeSpan.FromSeconds(30),
        };
        await using var sidekick = await SidekickHarness.StartAsync(options, [a]);

        async Task<TimeSpan?> SilentAsync(int port)
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(IPAddress.Loopback, port);
            var started = System.Diagnostics.Stopwatch.StartNew();
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(6));
            try
            {
                var read = await tcp.GetStream().ReadAsync(new byte[1], limit.Token);
                return read == 0 ? started.Elapsed : null;
            }
            catch (OperationCanceledException)
            {
                return null; // still open after 6 s
            }
            catch (IOException)
            {
                return started.Elapsed;
            }
        }

        var proxy = await SilentAsync(sidekick.BaseAddress.Port);
        var admin = await SilentAsync(sidekick.Server.AdminAddress!.Port);
        Assert.True(proxy is not null, "the proxy port kept a silent connection past 6 s");
        Assert.True(admin is not null, $"the admin listener kept a silent connection past 6 s (the proxy port closed its own after {proxy?.TotalSeconds:0.0} s)");
    }
}
