using System.Diagnostics;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Observability;

/// <summary>The live table as a person sees it: sidekick in a real terminal (tmux), read with capture-pane.</summary>
public sealed class TableUnderTmuxTests
{
    private static string Tmux(params string[] args)
    {
        var start = new ProcessStartInfo("tmux") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return output;
    }

    [Fact]
    public async Task A_stopped_backend_turns_down_and_traffic_moves_to_the_next_site()
    {
        Assert.True(File.Exists("/usr/bin/tmux"), "tmux is not installed: run scripts/test.sh");
        await using var a = await TestBackend.StartAsync("a");
        await using var b = await TestBackend.StartAsync("b");
        var port = SidekickProcess.FreePort();
        var session = "sidekick-table-" + Environment.ProcessId;
        var command = $"exec dotnet {Path.Combine(AppContext.BaseDirectory, "sidekick.dll")} --address 127.0.0.1:{port} --health-path /health --health-duration 200ms {a.Url} {b.Url}";
        Tmux("new-session", "-d", "-s", session, "-x", "220", "-y", "30", command);
        // kill-session only sends SIGHUP, which sidekick (like upstream) takes as "reload": stop it by its pid.
        var pid = int.Parse(Tmux("display-message", "-p", "-t", session, "#{pane_pid}").Trim(), System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            async Task<string> ScreenAsync(Func<string, bool> until)
            {
                var deadline = Environment.TickCount64 + 20000;
                string screen;
                while (!until(screen = Tmux("capture-pane", "-p", "-t", session)))
                {
                    Assert.True(Environment.TickCount64 < deadline, "screen never showed it:\n" + screen);
                    await Task.Delay(200);
                }

                return screen;
            }

            var aRow = $"│ 1st  │ {a.Url.ToString().TrimEnd('/')}";
            var first = await ScreenAsync(s => s.Contains("active site: 1st", StringComparison.Ordinal) && s.Contains(aRow, StringComparison.Ordinal));
            Assert.Contains("│ 2nd  │", first, StringComparison.Ordinal);
            using var client = new HttpClient();
            Assert.Equal("a", await client.GetStringAsync($"http://127.0.0.1:{port}/x"));

            await a.StopAsync();
            var after = await ScreenAsync(s => s.Contains("active site: 2nd", StringComparison.Ordinal));
            var row = after.Split('\n').Single(l => l.Contains(aRow, StringComparison.Ordinal));
            Assert.Contains(" DOWN ", row, StringComparison.Ordinal);
            Assert.Equal("b", await client.GetStringAsync($"http://127.0.0.1:{port}/x"));
        }
        finally
        {
            using (var sidekick = System.Diagnostics.Process.GetProcessById(pid))
            {
                sidekick.Kill();
                await sidekick.WaitForExitAsync();
            }

            Tmux("kill-session", "-t", session);
        }
    }
}
