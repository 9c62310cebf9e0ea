namespace Sidekick.Cli;

/// <summary>A mistake on the command line: printed as one line on stderr, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>A configuration that cannot start (bad SITE, bind failure, bad certificate): one line, exit code 1.</summary>
internal sealed class FatalException(string message, Exception? inner = null) : Exception(message, inner);
