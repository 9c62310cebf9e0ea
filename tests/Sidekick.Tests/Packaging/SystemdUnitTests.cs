using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Packaging;

/// <summary>
/// The Go sidekick's unit runs <c>sidekick $SIDEKICK_OPTIONS $SIDEKICK_SITES</c> from /etc/default/sidekick; an
/// environment file written for it must start this sidekick too, and SIDEKICK_ARGS still works.
/// </summary>
public sealed class SystemdUnitTests
{
    private static string Deploy(string name) => File.ReadAllText(Path.Combine(S3rverProcess.RepositoryRoot, "deploy", "systemd", name));

    [Fact]
    public void Unit_runs_upstreams_variables_then_sidekick_args()
    {
        var execStart = Deploy("sidekick.service").Split('\n').Where(l => l.StartsWith("ExecStart=", StringComparison.Ordinal)).ToArray();
        Assert.Equal(["ExecStart=/usr/bin/sidekick $SIDEKICK_OPTIONS $SIDEKICK_SITES $SIDEKICK_ARGS"], execStart);
    }

    [Fact]
    public void Environment_file_documents_all_three_variables()
    {
        var defaults = Deploy("sidekick.default");
        Assert.Contains("#SIDEKICK_OPTIONS=", defaults, StringComparison.Ordinal);
        Assert.Contains("#SIDEKICK_SITES=", defaults, StringComparison.Ordinal);
        Assert.Contains("SIDEKICK_ARGS=", defaults, StringComparison.Ordinal);
    }
}
