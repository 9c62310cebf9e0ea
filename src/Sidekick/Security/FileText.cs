using Sidekick.Cli;

namespace Sidekick.Security;

/// <summary>Reads a file named on the command line; a file that cannot be read is one line saying which and why.</summary>
internal static class FileText
{
    /// <param name="path">The path as given.</param>
    /// <param name="what">What the file is, for the message: "the private key", "--key-password-file".</param>
    public static string Read(string path, string what)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new FatalException($"unable to read {what} \"{path}\": {Why(path, ex)}");
        }
    }

    /// <summary>The reason in words; .NET says "access denied" for a directory, which sends people to chmod.</summary>
    private static string Why(string path, Exception ex) => ex switch
    {
        FileNotFoundException => "no such file",
        DirectoryNotFoundException => "no such directory",
        UnauthorizedAccessException when Directory.Exists(path) => "it is a directory, not a file",
        UnauthorizedAccessException => "permission denied",
        _ => ex.Message,
    };
}
