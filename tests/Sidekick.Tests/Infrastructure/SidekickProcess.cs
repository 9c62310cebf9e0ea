using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Sidekick.Tests.Infrastructure;

/// <summary>The built sidekick program run as a real process, as an operator would run it.</summary>
internal sealed class SidekickProcess : IAsyncDisposable
{
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();

    private SidekickProcess(Process process)
    {
        Process = process;
        process.OutputDataReceived += (_, e) => { lock (_stdout) { _stdout.AppendLine(e.Data); } };
        process.ErrorDataReceived += (_, e) => { lock (_stderr) { _stderr.AppendLine(e.Data); } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public Process Process { get; }

    public string Stdout { get { lock (_stdout) { return _stdout.ToString(); } } }

    public string Stderr { get { lock (_stderr) { return _stderr.ToString(); } } }

    public static SidekickProcess Start(params string[] args) => StartIn(Environment.CurrentDirectory, args);

    public static SidekickProcess StartIn(string workingDirectory, params string[] args) =>
        StartIn(workingDirectory, new Dictionary<string, string>(), args);

    public static SidekickProcess StartIn(string workingDirectory, IReadOnlyDictionary<string, string> environment, params string[] args) =>
        StartUnder([], workingDirectory, environment, args);

    /// <summary>
    /// Starts sidekick through <paramref name="launcher"/> (e.g. <c>setpriv --reuid=nobody --</c>), a command
    /// that runs the rest of its arguments; empty runs it directly.
    /// </summary>
    public static SidekickProcess StartUnder(IReadOnlyList<string> launcher, string workingDirectory, IReadOnlyDictionary<string, string> environment, params string[] args) =>
        Launch(launcher, workingDirectory, environment, executable: null, args);

    /// <summary>
    /// Starts a published sidekick executable (a Native AOT build, as shipped) instead of the built sidekick.dll
    /// on the .NET host; null runs sidekick.dll.
    /// </summary>
    public static SidekickProcess StartExecutable(string? executable, string workingDirectory, IReadOnlyDictionary<string, string> environment, params string[] args) =>
        Launch([], workingDirectory, environment, executable, args);

    private static SidekickProcess Launch(IReadOnlyList<string> launcher, string workingDirectory, IReadOnlyDictionary<string, string> environment, string? executable, string[] args)
    {
        var start = new ProcessStartInfo(launcher.Count > 0 ? launcher[0] : executable ?? "dotnet")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        if (launcher.Count > 0)
        {
            foreach (var part in launcher.Skip(1))
            {
                start.ArgumentList.Add(part);
            }

            start.ArgumentList.Add(executable ?? "dotnet");
        }

        if (executable is null)
        {
            start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "sidekick.dll"));
        }

        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        return new SidekickProcess(Process.Start(start)!);
    }

    /// <summary>Runs to completion and returns the exit code.</summary>
    public static Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(params string[] args) =>
        RunAsync(new Dictionary<string, string>(), args);

    /// <summary>Runs to completion with extra environment variables and returns the exit code.</summary>
    public static Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(IReadOnlyDictionary<string, string> environment, params string[] args) =>
        RunUnderAsync([], environment, args);

    /// <summary>Runs to completion through <paramref name="launcher"/> (see <see cref="StartUnder"/>).</summary>
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunUnderAsync(
        IReadOnlyList<string> launcher, IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        await using var process = StartUnder(launcher, Environment.CurrentDirectory, environment, args);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.Process.WaitForExitAsync(timeout.Token);
        process.Process.WaitForExit(); // flush the async readers
        return (process.Process.ExitCode, process.Stdout, process.Stderr);
    }

    /// <summary>
    /// A loopback port free now, for a server a test starts on a port it must know beforehand. Taken below the
    /// kernel's ephemeral range: a port the kernel hands out for port 0 is also the source port of any outgoing
    /// connection, and with hundreds of loopback connections a second, one took the port between this check and
    /// the server's bind ("address already in use", seen on a busy machine). Below that range only another
    /// listener can take it. Each call moves on from the last (from a start that differs between processes).
    /// </summary>
    public static int FreePort()
    {
        var (low, high) = BelowEphemeral;
        for (var tries = 0; tries < high - low; tries++)
        {
            var port = low + (int)((uint)Interlocked.Increment(ref s_nextPort) % (uint)(high - low));
            try
            {
                using var listener = new TcpListener(IPAddress.Loopback, port);
                listener.Start();
                return port;
            }
            catch (SocketException)
            {
                // In use: the next one.
            }
        }

        using var any = new TcpListener(IPAddress.Loopback, 0);
        any.Start();
        return ((IPEndPoint)any.LocalEndpoint).Port;
    }

    private static int s_nextPort = Environment.ProcessId * 7919;

    /// <summary>[low, high) under the kernel's ephemeral range (ip_local_port_range), above the well-known and common service ports.</summary>
    private static readonly (int Low, int High) BelowEphemeral = ReadBelowEphemeral();

    private static (int, int) ReadBelowEphemeral()
    {
        const int Low = 20000;
        var ephemeralStart = 32768;
        try
        {
            var range = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[])['\t', ' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
            ephemeralStart = int.Parse(range[0], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            // Not Linux: the usual start of the range.
        }

        return ephemeralStart - Low >= 1000 ? (Low, ephemeralStart) : (ephemeralStart - 1000, ephemeralStart);
    }

    public void Signal(string name)
    {
        using var kill = System.Diagnostics.Process.Start("kill", ["-" + name, Process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
    }

    public async Task WaitForHealthAsync(int port)
    {
        using var client = new HttpClient();
        var deadline = Environment.TickCount64 + 30000;
        while (Environment.TickCount64 < deadline)
        {
            try
            {
                using var response = await client.GetAsync($"http://127.0.0.1:{port}/v1/health");
                if (response.IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"sidekick did not become healthy; stderr: {Stderr}");
    }

    public async ValueTask DisposeAsync()
    {
        if (!Process.HasExited)
        {
            Process.Kill(entireProcessTree: true);
            await Process.WaitForExitAsync();
        }

        Process.Dispose();
    }
}
