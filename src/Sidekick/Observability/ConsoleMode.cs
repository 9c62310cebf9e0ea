using Sidekick.Cli;

namespace Sidekick.Observability;

/// <summary>
/// How sidekick talks to its console (upstream §8.1): "console display" (log and trace lines) when --log or
/// --trace is given or stdout is not a terminal; otherwise the live table. Colours only on a terminal.
/// </summary>
internal sealed record ConsoleMode(bool ConsoleDisplay, bool Colors, bool Quiet, bool Json, bool Debug)
{
    public static ConsoleMode From(SidekickOptions options, bool stdoutIsTerminal)
    {
        var colors = stdoutIsTerminal &&
                     string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR")) &&
                     Environment.GetEnvironmentVariable("TERM") != "dumb";
        return new ConsoleMode(options.Log || options.TraceExplicit || !stdoutIsTerminal, colors, options.Quiet, options.Json, options.Debug);
    }

    /// <summary>Whether trace records are printed at all (the table mode prints them only as JSON).</summary>
    public bool PrintsTraces(string trace) => !Quiet && trace.Length > 0 && (ConsoleDisplay || Json);

    public string Paint(string text, string ansi) => Colors ? $"\u001b[{ansi}m{text}\u001b[0m" : text;
}
