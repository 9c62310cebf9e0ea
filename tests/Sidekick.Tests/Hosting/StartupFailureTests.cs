using System.Net;
using System.Net.Sockets;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Hosting;

/// <summary>
/// Every way a start can fail, run as a process: exactly one line on stderr (naming the value and what would
/// work), nothing on stdout, exit 1 (2 for a usage mistake), never a stack trace. Binds are refused on both
/// socket engines: sidekick's event loops (epoll) and .NET's (dotnet).
/// </summary>
public sealed class StartupFailureTests
{
    private static Dictionary<string, string> Engine(string io) => new() { ["SIDEKICK_IO"] = io };

    private static void AssertOneLine(int expectedCode, string expectedLine, (int ExitCode, string Stdout, string Stderr) run)
    {
        Assert.DoesNotContain("   at ", run.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", run.Stderr, StringComparison.Ordinal);
        Assert.Equal(expectedLine + "\n", run.Stderr.ReplaceLineEndings("\n").TrimEnd('\n') + "\n");
        Assert.Equal(string.Empty, run.Stdout.Trim());
        Assert.Equal(expectedCode, run.ExitCode);
    }

    [Theory]
    [InlineData("epoll")]
    [InlineData("dotnet")]
    public async Task An_address_that_is_not_this_hosts_is_one_line(string io)
    {
        // 192.0.2.0/24 is TEST-NET-1: never assigned to a real host. Only the bind is tried; nothing is sent.
        AssertOneLine(1,
            "sidekick: unable to listen on \"192.0.2.1:9800\" (--address): 192.0.2.1 is not an address of this host; " +
            "use one of its addresses, or \":9800\" for all of them",
            await SidekickProcess.RunAsync(Engine(io), "--address", "192.0.2.1:9800", "http://127.0.0.1:1"));
    }

    [Theory]
    [InlineData("epoll")]
    [InlineData("dotnet")]
    public async Task A_busy_port_is_one_line(string io)
    {
        using var blocker = new TcpListener(IPAddress.Loopback, 0);
        blocker.Start();
        var port = ((IPEndPoint)blocker.LocalEndpoint).Port;
        AssertOneLine(1,
            $"sidekick: unable to listen on \"127.0.0.1:{port}\" (--address): port {port} is already in use by another process",
            await SidekickProcess.RunAsync(Engine(io), "--address", $"127.0.0.1:{port}", "http://127.0.0.1:1"));
    }

    [Theory]
    [InlineData("epoll")]
    [InlineData("dotnet")]
    public async Task A_refused_diagnostics_listener_names_pprof(string io)
    {
        var port = SidekickProcess.FreePort();
        AssertOneLine(1,
            "sidekick: unable to listen on \"192.0.2.1:9801\" (--pprof): 192.0.2.1 is not an address of this host; " +
            "use one of its addresses, or \":9801\" for all of them",
            await SidekickProcess.RunAsync(Engine(io), "--address", $"127.0.0.1:{port}", "--pprof", "192.0.2.1:9801", "http://127.0.0.1:1"));
    }

    [PrivilegedPortTheory]
    [InlineData("epoll", "127.0.0.1:80")]
    [InlineData("dotnet", "127.0.0.1:80")]
    [InlineData("epoll", ":80")]
    [InlineData("dotnet", ":80")]
    public async Task A_privileged_port_as_a_normal_user_is_one_line(string io, string address)
    {
        AssertOneLine(1,
            $"sidekick: unable to listen on \"{address}\" (--address): port 80 is privileged: it needs root or the " +
            "CAP_NET_BIND_SERVICE capability; use a port from 1024 up, e.g. \":8080\"",
            await SidekickProcess.RunUnderAsync(HostConditions.Unprivileged, Engine(io), "--address", address, "http://127.0.0.1:1"));
    }

    /// <summary>Runs the rest of its arguments in a new network namespace with IPv6 switched off.</summary>
    private static readonly string[] WithoutIpv6 =
        ["/usr/bin/unshare", "--net", "/bin/sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && exec \"$@\"", "sh"];

    [NetworkNamespaceTheory]
    [InlineData("epoll")]
    [InlineData("dotnet")]
    public async Task An_ipv6_address_without_ipv6_is_one_line(string io)
    {
        AssertOneLine(1,
            "sidekick: unable to listen on \"[::1]:9800\" (--address): ::1 is not an address of this host (or IPv6 is disabled here); " +
            "use one of its addresses, or \":9800\" for all of them",
            await SidekickProcess.RunUnderAsync(WithoutIpv6, Engine(io), "--address", "[::1]:9800", "http://127.0.0.1:1"));
    }

    [NetworkNamespaceTheory]
    [InlineData("epoll")]
    [InlineData("dotnet")]
    public async Task Every_interface_without_ipv6_falls_back_to_ipv4(string io)
    {
        await using var sidekick = SidekickProcess.StartUnder(WithoutIpv6, Environment.CurrentDirectory, Engine(io), "--address", ":9800", "http://127.0.0.1:1");
        for (var deadline = Environment.TickCount64 + 30000; !sidekick.Stdout.Contains("listening on", StringComparison.Ordinal); await Task.Delay(50))
        {
            Assert.False(sidekick.Process.HasExited, "sidekick exited: " + sidekick.Stderr);
            Assert.True(Environment.TickCount64 < deadline, "sidekick never listened: " + sidekick.Stderr);
        }

        Assert.Equal("sidekick: listening on ':9800'", sidekick.Stdout.Trim());
        Assert.Equal(string.Empty, sidekick.Stderr.Trim());
    }
}
