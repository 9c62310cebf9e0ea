using Sidekick.Cli;
using Sidekick.Topology;

namespace Sidekick.Hosting;

/// <summary>
/// The process: parse the command line, validate the SITEs, run the server until SIGTERM/SIGINT. User
/// mistakes are one line on stderr (exit 2 for usage, 1 for configurations that cannot start).
/// </summary>
internal static class SidekickApp
{
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var programName = ProgramName;
        try
        {
            var parsed = CommandLineParser.Parse(programName, args);
            if (parsed is CommandLineResult.ShowText show)
            {
                await stdout.WriteLineAsync(show.Text.TrimEnd('\n'));
                return 0;
            }

            var options = ((CommandLineResult.Run)parsed).Options;
            await using var server = Create(options);
            await server.StartAsync();
            await server.WaitForShutdownAsync();
            return 0;
        }
        catch (UsageException ex)
        {
            await stderr.WriteLineAsync($"{programName}: {ex.Message} (see '{programName} --help')");
            return 2;
        }
        catch (FatalException ex)
        {
            await stderr.WriteLineAsync($"{programName}: {ex.Message}");
            return 1;
        }
    }

    /// <summary>Builds a server from validated options (used by the process and by in-process tests).</summary>
    public static SidekickServer Create(SidekickOptions options)
    {
        // Validate the SITEs before anything binds, so a typo fails fast with one line.
        var first = LoadSites(options);
        var loaded = false;
        return SidekickServer.Create(options, () =>
        {
            if (!loaded)
            {
                loaded = true;
                return first;
            }

            return LoadSites(options);
        });
    }

    private static IReadOnlyList<SiteDefinition> LoadSites(SidekickOptions options) =>
        SiteParser.Parse(options.Sites, options.ProgramName, options.HealthPath, options.ReadHealthPath, options.HealthPort);

    /// <summary>argv[0]'s file name, as upstream prints it; "sidekick" when run through the dotnet host.</summary>
    private static string ProgramName
    {
        get
        {
            var path = Environment.ProcessPath;
            var name = path is null ? "sidekick" : Path.GetFileNameWithoutExtension(path);
            return name is "dotnet" or "" ? "sidekick" : name;
        }
    }
}
