using System.Net;
using System.Net.Sockets;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Security;

namespace Sidekick.Tests.Hosting;

/// <summary>
/// Every way a start can fail, run as a process: exactly one line on stderr (naming the value and what would
/// work), nothing on stdout, exit 1 (2 for a usage mistake), never a stack trace. Binds are refused on both
/// socket engines: sidekick's event loops (epoll) and .NET's (dotnet).
/// </summary>
[Collection(nameof(HeavyTests))]
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

    [Fact]
    public async Task A_bad_cache_variable_is_one_line_and_a_usage_exit()
    {
        var environment = new Dictionary<string, string>
        {
            ["SIDEKICK_CACHE_ENDPOINT"] = "http://127.0.0.1:1",
            ["SIDEKICK_CACHE_ACCESS_KEY"] = "minio",
            ["SIDEKICK_CACHE_SECRET_KEY"] = "minio123-very-secret",
            ["SIDEKICK_CACHE_BUCKET"] = "cache01",
            ["SIDEKICK_CACHE_MIN_SIZE"] = "abc",
        };
        AssertOneLine(2,
            "sidekick: invalid SIDEKICK_CACHE_MIN_SIZE \"abc\": expected a size in human units such as 64MB (see 'sidekick --help')",
            await SidekickProcess.RunAsync(environment, "--address", "127.0.0.1:0", "http://127.0.0.1:1"));
    }

    [Fact]
    public async Task A_file_that_cannot_be_read_is_one_line()
    {
        using var certificates = new TestCertificates();
        var (_, cert, key) = certificates.Leaf("leaf");
        var directory = certificates.Directory;
        (string Line, string[] Args)[] cases =
        [
            ($"sidekick: unable to read the public key \"{directory}\": it is a directory, not a file", ["--cert", directory, "--key", key]),
            ($"sidekick: unable to read the private key \"{directory}\": it is a directory, not a file", ["--cert", cert, "--key", directory]),
            ($"sidekick: unable to read the private key \"{directory}/missing.key\": no such file", ["--cert", cert, "--key", directory + "/missing.key"]),
            ($"sidekick: unable to read --key-password-file \"{directory}/missing\": no such file", ["--cert", cert, "--key", key, "--key-password-file", directory + "/missing"]),
        ];
        foreach (var (line, args) in cases)
        {
            AssertOneLine(1, line, await SidekickProcess.RunAsync([.. args, "--address", "127.0.0.1:0", "http://127.0.0.1:1"]));
        }

        // Backend TLS files are read only for https SITEs.
        AssertOneLine(1, $"sidekick: unable to read the CA certificate \"{directory}\": it is a directory, not a file",
            await SidekickProcess.RunAsync("--cacert", directory, "--address", "127.0.0.1:0", "https://127.0.0.1:1"));
        AssertOneLine(1, $"sidekick: unable to read the public key \"{directory}/nowhere/c.crt\": no such directory",
            await SidekickProcess.RunAsync("--client-cert", directory + "/nowhere/c.crt", "--client-key", key, "--address", "127.0.0.1:0", "https://127.0.0.1:1"));
    }

    [UnprivilegedTheory]
    [InlineData("epoll")]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task A_file_without_read_permission_is_one_line(string io)
    {
        // Mode 000: its owner cannot read it either, unless the owner is root, and then sidekick runs as nobody.
        var directory = Directory.CreateTempSubdirectory("sidekick-perm-");
        try
        {
            File.SetUnixFileMode(directory.FullName, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                                                     UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
            var secret = Path.Combine(directory.FullName, "password");
            await File.WriteAllTextAsync(secret, "s3cret\n");
            File.SetUnixFileMode(secret, UnixFileMode.None);
            AssertOneLine(1, $"sidekick: unable to read the public key \"{secret}\": permission denied",
                await SidekickProcess.RunUnderAsync(HostConditions.Unprivileged, Engine(io), "--cert", secret, "--key", secret, "--address", "127.0.0.1:0", "http://127.0.0.1:1"));
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task A_damaged_key_is_one_line()
    {
        using var certificates = new TestCertificates();
        var leaf = certificates.Leaf("leaf");
        var damaged = Path.Combine(certificates.Directory, "damaged.key");
        await File.WriteAllTextAsync(damaged, "-----BEGIN PRIVATE KEY-----\n!!!not base64\n-----END PRIVATE KEY-----\n");
        AssertOneLine(1, $"sidekick: the private key {damaged} is not readable: a PEM block is not valid base64",
            await SidekickProcess.RunAsync("--cert", leaf.CertPath, "--key", damaged, "--address", "127.0.0.1:0", "http://127.0.0.1:1"));

        var badIv = Path.Combine(certificates.Directory, "bad-iv.key");
        await File.WriteAllTextAsync(badIv, "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,ZZZZ\n\nAAAA\n-----END RSA PRIVATE KEY-----\n");
        AssertOneLine(1, $"sidekick: unable to decrypt private key {badIv}: the DEK-Info IV \"ZZZZ\" is not hexadecimal (at least 8 bytes)",
            await SidekickProcess.RunAsync("--cert", leaf.CertPath, "--key", badIv, "--key-password", "x", "--address", "127.0.0.1:0", "http://127.0.0.1:1"));

        var cut = Path.Combine(certificates.Directory, "cut.key");
        await File.WriteAllTextAsync(cut, "-----BEGIN PRIVATE KEY\nxx");
        AssertOneLine(1, $"sidekick: the private key {cut} is not readable: no PEM private key block found",
            await SidekickProcess.RunAsync("--cert", leaf.CertPath, "--key", cut, "--address", "127.0.0.1:0", "http://127.0.0.1:1"));
    }

    [Fact]
    public async Task Two_ways_to_give_the_key_password_is_a_usage_mistake() =>
        AssertOneLine(2,
            "sidekick: --key-password and --key-password-file are both set: give the password one way (the file keeps it out of the process list) (see 'sidekick --help')",
            await SidekickProcess.RunAsync("--key-password", "x", "--key-password-file", "/p", "http://127.0.0.1:1"));

    // A SITE with user information starts (as upstream; EndpointUserInfoTests); one that fails for another reason
    // names it without the password.
    [Fact]
    public async Task A_bad_site_with_credentials_is_refused_without_printing_the_password() =>
        AssertOneLine(1,
            "sidekick: invalid port in \"http://REDACTED@127.0.0.1:99999\": must be a number in [1, 65535]",
            await SidekickProcess.RunAsync("--address", "127.0.0.1:0", "http://minio:pa55w0rd@127.0.0.1:99999"));

    [Fact]
    public async Task A_site_without_a_scheme_never_echoes_its_password() =>
        AssertOneLine(1,
            "sidekick: missing host address \"REDACTED@127.0.0.1:9001\" in SITE 1, expected a URL such as http://minio1:9000; see 'sidekick --help'",
            await SidekickProcess.RunAsync("--address", "127.0.0.1:0", "u:hunter2@127.0.0.1:9001"));

    [Fact]
    public async Task An_unclosed_bracket_is_named_not_called_a_bad_port() =>
        AssertOneLine(1,
            "sidekick: missing ']' in \"http://[::1:9003\": an IPv6 address is written in brackets, e.g. http://[::1]:9000",
            await SidekickProcess.RunAsync("--address", "127.0.0.1:0", "http://[::1:9003"));

    [Fact]
    public async Task A_cache_endpoint_with_a_query_is_refused_without_echoing_it() =>
        AssertOneLine(2,
            "sidekick: invalid SIDEKICK_CACHE_ENDPOINT \"http://h:9000/?REDACTED\": expected no user information, query or fragment, such as http://minio-cache:9000 (credentials go in SIDEKICK_CACHE_ACCESS_KEY and SIDEKICK_CACHE_SECRET_KEY) (see 'sidekick --help')",
            await SidekickProcess.RunAsync(
                new Dictionary<string, string> { ["SIDEKICK_CACHE_ENDPOINT"] = "http://h:9000/?secret=hunter2", ["SIDEKICK_CACHE_ACCESS_KEY"] = "a", ["SIDEKICK_CACHE_SECRET_KEY"] = "s", ["SIDEKICK_CACHE_BUCKET"] = "b01" },
                "--address", "127.0.0.1:0", "http://127.0.0.1:1"));

    [Fact]
    public async Task A_spool_directory_that_cannot_be_made_is_one_line_naming_it_not_a_free_space_warning()
    {
        // A regular file where the directory should go: no user, root included, can make a directory under it.
        var file = Path.GetTempFileName();
        try
        {
            var spool = Path.Combine(file, "spool");
            var run = await SidekickProcess.RunAsync(
                new Dictionary<string, string>
                {
                    ["SIDEKICK_CACHE_ENDPOINT"] = "http://127.0.0.1:1", ["SIDEKICK_CACHE_ACCESS_KEY"] = "a", ["SIDEKICK_CACHE_SECRET_KEY"] = "s",
                    ["SIDEKICK_CACHE_BUCKET"] = "sidekick-cache", ["SIDEKICK_CACHE_SPOOL_DIR"] = spool,
                },
                "--address", "127.0.0.1:0", "http://127.0.0.1:1");
            Assert.Equal(2, run.ExitCode);
            var line = Assert.Single(run.Stderr.ReplaceLineEndings("\n").TrimEnd('\n').Split('\n'));
            Assert.StartsWith($"sidekick: the cache spool directory '{spool}' (SIDEKICK_CACHE_SPOOL_DIR) cannot be created or written: ", line, StringComparison.Ordinal);
            Assert.EndsWith(" (see 'sidekick --help')", line, StringComparison.Ordinal);
            Assert.DoesNotContain("bytes free", run.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task A_bucket_name_with_a_slash_is_refused_at_start() =>
        AssertOneLine(2,
            "sidekick: invalid SIDEKICK_CACHE_BUCKET \"bad/bucket\": expected the name of an existing bucket, 3 to 255 letters, digits, '.', '-' or '_' " +
            "(S3 today: 3 to 63 lowercase letters, digits, '.' and '-'), such as sidekick-cache (see 'sidekick --help')",
            await SidekickProcess.RunAsync(
                new Dictionary<string, string> { ["SIDEKICK_CACHE_ENDPOINT"] = "http://127.0.0.1:1", ["SIDEKICK_CACHE_ACCESS_KEY"] = "a", ["SIDEKICK_CACHE_SECRET_KEY"] = "s", ["SIDEKICK_CACHE_BUCKET"] = "bad/bucket" },
                "--address", "127.0.0.1:0", "http://127.0.0.1:1"));
}
