using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Hosting;

/// <summary>The built program, run as a process: exit codes, messages, signals.</summary>
[Collection(nameof(HeavyTests))]
public sealed class ProcessTests
{
    [Theory]
    [InlineData(2, "flag provided but not defined: -nope", "--nope", "http://x:1")]
    [InlineData(2, "no SITE given")]
    [InlineData(2, "invalid --health-duration \"0s\"", "--health-duration", "0s", "http://x:1")]
    [InlineData(2, "invalid value \"5\" for flag -d", "-d", "5", "http://x:1")]
    [InlineData(1, "unexpected scheme \"ftp\"", "ftp://x:1")]
    [InlineData(1, "flags must come before the SITE arguments", "http://x:1", "--log")]
    public async Task Mistakes_are_one_line_and_a_nonzero_exit(int code, string message, params string[] args)
    {
        var (exitCode, stdout, stderr) = await SidekickProcess.RunAsync(args);
        Assert.Equal(code, exitCode);
        Assert.Contains(message, stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stdout.Trim());
    }

    [Theory]
    [InlineData("SIDEKICK_IO", "uring", "invalid SIDEKICK_IO 'uring'")]
    [InlineData("SIDEKICK_IO_THREADS", "0", "invalid SIDEKICK_IO_THREADS '0'")]
    [InlineData("SIDEKICK_FORWARDER", "fast", "invalid SIDEKICK_FORWARDER 'fast'")]
    public async Task A_bad_engine_variable_is_one_line_and_a_nonzero_exit(string variable, string value, string message)
    {
        var (exitCode, stdout, stderr) = await SidekickProcess.RunAsync(new Dictionary<string, string> { [variable] = value }, "http://127.0.0.1:1");
        Assert.Equal(1, exitCode);
        Assert.Contains(message, stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stdout.Trim());
    }

    [Fact]
    public async Task Help_and_version_exit_zero()
    {
        var help = await SidekickProcess.RunAsync("--help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("USAGE:", help.Stdout, StringComparison.Ordinal);
        var version = await SidekickProcess.RunAsync("--version");
        Assert.Equal(0, version.ExitCode);
        Assert.Contains(" version ", version.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_working_directory_is_neither_read_nor_watched()
    {
        // ASP.NET Core's default host would read appsettings.json from it (here: one more listener) and watch
        // it and every subdirectory for changes.
        var directory = Directory.CreateTempSubdirectory("sidekick-cwd-");
        try
        {
            Directory.CreateDirectory(Path.Combine(directory.FullName, "a", "b"));
            var stray = SidekickProcess.FreePort();
            await File.WriteAllTextAsync(Path.Combine(directory.FullName, "appsettings.json"),
                "{\"Kestrel\":{\"Endpoints\":{\"Stray\":{\"Url\":\"http://127.0.0.1:" + stray + "\"}}}}");
            var port = SidekickProcess.FreePort();
            await using var process = SidekickProcess.StartIn(directory.FullName, "--address", $"127.0.0.1:{port}", "http://127.0.0.1:1");
            await WaitForListenerAsync(port);

            var watchers = Directory.GetFiles($"/proc/{process.Process.Id}/fd")
                .Select(LinkTargetOrNull)
                .Count(target => target == "anon_inode:inotify");
            Assert.Equal(0, watchers);
            using var probe = new TcpClient();
            await Assert.ThrowsAnyAsync<SocketException>(() => probe.ConnectAsync(IPAddress.Loopback, stray));
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    /// <summary>Where a descriptor points; null for one the process closed between the listing and the read.</summary>
    private static string? LinkTargetOrNull(string fd)
    {
        try
        {
            return File.ResolveLinkTarget(fd, returnFinalTarget: false)?.LinkTarget;
        }
        catch (FileNotFoundException)
        {
            return null;
        }
    }

    private static async Task WaitForListenerAsync(int port)
    {
        for (var deadline = Environment.TickCount64 + 30000; ; await Task.Delay(50))
        {
            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync(IPAddress.Loopback, port);
                return;
            }
            catch (SocketException) when (Environment.TickCount64 < deadline)
            {
            }
        }
    }

    [Fact]
    public async Task Sigterm_drains_in_flight_requests_and_exits_zero()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient();
        var slow = client.GetStringAsync($"http://127.0.0.1:{port}/slow?ms=2000");
        await Eventually.WaitUntilAsync(() => backend.Seen.Any(r => r.RawTarget.StartsWith("/slow", StringComparison.Ordinal)));
        sidekick.Signal("TERM");
        Assert.Equal("a", await slow);
        await sidekick.Process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        Assert.Equal(0, sidekick.Process.ExitCode);
    }

    [Fact]
    public async Task Sighup_reloads_without_a_single_failed_request()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        using var client = new HttpClient();
        var failures = 0;
        for (var i = 0; i < 20; i++)
        {
            sidekick.Signal("HUP");
            for (var j = 0; j < 10; j++)
            {
                using var response = await client.GetAsync($"http://127.0.0.1:{port}/x");
                failures += response.IsSuccessStatusCode ? 0 : 1;
            }
        }

        Assert.Equal(0, failures);
        Assert.False(sidekick.Process.HasExited);
    }

    [Fact]
    public async Task Sighup_and_sigint_work_when_inherited_ignored()
    {
        // nohup starts its command with SIGHUP ignored, and a shell its background jobs with SIGINT ignored; a
        // process inherits both. The Go sidekick reloads and stops on them anyway (signal.Notify un-ignores).
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.StartUnder(["bash", "-c", "trap '' HUP INT; exec \"$@\"", "ignoring"],
            Environment.CurrentDirectory, new Dictionary<string, string>(),
            "--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", backend.Url.ToString());
        await sidekick.WaitForHealthAsync(port);

        sidekick.Signal("HUP");
        for (var deadline = Environment.TickCount64 + 30000; !sidekick.Stdout.Contains("caught signal 'hangup': reloaded", StringComparison.Ordinal); await Task.Delay(50))
        {
            Assert.True(Environment.TickCount64 < deadline, "no reload for an inherited-ignored SIGHUP: " + sidekick.Stdout + sidekick.Stderr);
        }

        using var client = new HttpClient();
        Assert.Equal("a", await client.GetStringAsync($"http://127.0.0.1:{port}/x"));

        sidekick.Signal("INT");
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await sidekick.Process.WaitForExitAsync(stop.Token);
        Assert.Equal(0, sidekick.Process.ExitCode);
        Assert.Contains("caught signal 'interrupt': stopping", sidekick.Stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Sighup_and_sigterm_print_one_line_each(bool json)
    {
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        string[] args = ["--address", $"127.0.0.1:{port}", "--health-path", "/health", "--trace", "", .. json ? new[] { "--json" } : [], backend.Url.ToString()];
        await using var sidekick = SidekickProcess.Start(args);
        await sidekick.WaitForHealthAsync(port);

        sidekick.Signal("HUP");
        for (var deadline = Environment.TickCount64 + 30000; !sidekick.Stdout.Contains("hangup", StringComparison.Ordinal); await Task.Delay(50))
        {
            Assert.True(Environment.TickCount64 < deadline, "no line for SIGHUP: " + sidekick.Stdout);
        }

        using var client = new HttpClient();
        var slow = client.GetStringAsync($"http://127.0.0.1:{port}/slow?ms=1500");
        while (backend.Hits == 0)
        {
            await Task.Delay(20);
        }

        sidekick.Signal("TERM");
        Assert.Equal("a", await slow);
        await sidekick.Process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        sidekick.Process.WaitForExit();
        Assert.Equal(0, sidekick.Process.ExitCode);
        Assert.Equal(string.Empty, sidekick.Stderr.Trim());

        var lines = sidekick.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        const string hangup = "caught signal 'hangup': reloaded the SITEs: 1 site, 1 backend (0 added, 0 removed, the others keep their state)";
        const string terminated = "caught signal 'terminated': stopping; 1 request in flight get up to 30s to finish";
        if (!json)
        {
            Assert.Equal([$"sidekick: listening on '127.0.0.1:{port}'", "sidekick: " + hangup, "sidekick: " + terminated], lines);
            return;
        }

        var objects = lines.Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(["listening on '127.0.0.1:" + port + "'", hangup, terminated], objects.Select(o => o.GetProperty("Message").GetString()));
        Assert.All(objects, o => Assert.Equal("INFO", o.GetProperty("Type").GetString()));
        Assert.All(objects, o => Assert.True(o.GetProperty("Timestamp").GetDateTime() > DateTime.UnixEpoch));
        Assert.Equal("hangup", objects[1].GetProperty("Signal").GetString());
        Assert.Equal(1, objects[1].GetProperty("Backends").GetInt32());
        Assert.Equal(0, objects[1].GetProperty("Added").GetInt32());
        Assert.Equal("terminated", objects[2].GetProperty("Signal").GetString());
        Assert.Equal(1, objects[2].GetProperty("InFlight").GetInt32());
    }

    [Fact]
    public async Task Json_makes_every_line_json()
    {
        // The RR DNS line, the generated certificate, the listening line, state and trace lines, a failure.
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--json", "--log", "--rr-dns-mode", "--auto-tls-host", "127.0.0.1", "--address", $"127.0.0.1:{port}",
            "--health-path", "/health", "--health-duration", "200ms", $"http://localhost:{backend.Port}");
        for (var deadline = Environment.TickCount64 + 30000;
             !sidekick.Stdout.Contains("\"type\":\"TRACE\"", StringComparison.Ordinal) || !sidekick.Stdout.Contains("listening on", StringComparison.Ordinal);
             await Task.Delay(50))
        {
            Assert.False(sidekick.Process.HasExited, "sidekick exited: " + sidekick.Stderr);
            Assert.True(Environment.TickCount64 < deadline, "no probe trace or listening line: " + sidekick.Stdout);
        }

        sidekick.Signal("TERM");
        await sidekick.Process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        sidekick.Process.WaitForExit();
        var lines = sidekick.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var objects = lines.Select(l => JsonDocument.Parse(l).RootElement).ToArray(); // every line parses
        Assert.Contains(objects, o => o.TryGetProperty("Hostname", out var host) && host.GetString() == $"http://localhost:{backend.Port}");
        var certificate = Assert.Single(objects, o => o.TryGetProperty("Certificate", out _));
        Assert.Equal("generated TLS certificate for host '127.0.0.1'", certificate.GetProperty("Message").GetString());
        Assert.Matches("^([0-9A-F]{2} ){31}[0-9A-F]{2}$", certificate.GetProperty("Certificate").GetString());
        Assert.Contains(objects, o => o.TryGetProperty("Address", out var address) && address.GetString() == $"127.0.0.1:{port}");
        Assert.Contains(objects, o => o.TryGetProperty("Type", out var type) && type.GetString() == "LOG");
        Assert.Contains(objects, o => o.TryGetProperty("Signal", out var signal) && signal.GetString() == "terminated");

        // A failure once the command line said --json is a JSON line too.
        var (exitCode, _, stderr) = await SidekickProcess.RunAsync("--json", "--address", "192.0.2.1:9800", "http://127.0.0.1:1");
        Assert.Equal(1, exitCode);
        var error = JsonDocument.Parse(Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries))).RootElement;
        Assert.Equal("ERROR", error.GetProperty("Type").GetString());
        Assert.StartsWith("unable to listen on \"192.0.2.1:9800\" (--address): ", error.GetProperty("Message").GetString(), StringComparison.Ordinal);
    }
}
