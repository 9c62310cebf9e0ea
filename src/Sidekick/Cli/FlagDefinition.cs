namespace Sidekick.Cli;

internal enum FlagKind
{
    Bool,
    String,
    Int,
    Duration,
    Bytes,
    IntList,
}

/// <summary>
/// One command-line flag: its names (first is the long name), how its value is read, its help line and how
/// it lands in <see cref="SidekickOptions"/>. Adding a setting means adding one entry to <see cref="Flags.All"/>.
/// </summary>
internal sealed record FlagDefinition(
    string[] Names,
    FlagKind Kind,
    string Usage,
    string? DefaultText,
    Func<SidekickOptions, FlagValue, SidekickOptions> Apply,
    bool Hidden = false,
    string Placeholder = "value");

/// <summary>A parsed flag value; only the member matching the flag's kind is set.</summary>
internal readonly record struct FlagValue(string Text, bool Bool = false, long Int = 0, TimeSpan Duration = default, IReadOnlyList<int>? Ints = null);
