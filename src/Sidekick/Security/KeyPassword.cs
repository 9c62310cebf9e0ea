using Sidekick.Cli;

namespace Sidekick.Security;

/// <summary>
/// The password of an encrypted --key. A command line is world-readable (<c>/proc/PID/cmdline</c>, <c>ps</c>),
/// so besides upstream's --key-password it can come from a file (--key-password-file, e.g. a mounted secret)
/// or from SIDEKICK_KEY_PASSWORD; a flag wins over the variable.
/// </summary>
internal static class KeyPassword
{
    public const string Variable = "SIDEKICK_KEY_PASSWORD";

    /// <summary>The password to use, or null when none was given. Reads the file only when a --key is used.</summary>
    public static string? Resolve(SidekickOptions options, string? fromEnvironment)
    {
        if (!string.IsNullOrEmpty(options.KeyPassword) || string.IsNullOrEmpty(options.Key))
        {
            return options.KeyPassword;
        }

        if (!string.IsNullOrEmpty(options.KeyPasswordFile))
        {
            // `echo secret > file` and most secret stores end the file with a newline that is not part of it.
            return FileText.Read(options.KeyPasswordFile, "--key-password-file").TrimEnd('\r', '\n');
        }

        return string.IsNullOrEmpty(fromEnvironment) ? null : fromEnvironment;
    }
}
