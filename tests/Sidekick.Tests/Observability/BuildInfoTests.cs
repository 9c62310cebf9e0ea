using Sidekick.Observability;

namespace Sidekick.Tests.Observability;

public sealed class BuildInfoTests
{
    [Theory]
    [InlineData("1.2.3+0123456789abcdef0123456789abcdef01234567", "1.2.3", "0123456789abcdef0123456789abcdef01234567")]
    [InlineData("0.0.0-g1a2b3c4+1a2b3c4d", "0.0.0-g1a2b3c4", "1a2b3c4d")]
    [InlineData("0.0.0-dev", "0.0.0-dev", "unknown")]
    [InlineData("0.0.0-dev+", "0.0.0-dev", "unknown")]
    [InlineData("", "0.0.0-dev", "unknown")]
    [InlineData(null, "0.0.0-dev", "unknown")]
    public void The_informational_version_splits_into_version_and_commit(string? informational, string version, string commit)
    {
        var build = BuildInfo.FromInformationalVersion(informational);
        Assert.Equal(version, build.Version);
        Assert.Equal(commit, build.Commit);
    }
}
