using System.Diagnostics;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Packaging;

/// <summary>
/// The Kubernetes examples and the Dockerfile cannot run here (no cluster, no container engine), so
/// scripts/lint-deploy.mjs checks them against this build: YAML that parses, images that exist, only flags that
/// this sidekick's --help lists, probes on its own health path. scripts/package-check.sh runs it again against
/// the installed release binary.
/// </summary>
public sealed class DeployLintTests
{
    [Fact]
    public async Task Deploy_examples_name_only_real_images_and_flags_of_this_build()
    {
        var root = S3rverProcess.RepositoryRoot;
        Assert.True(Directory.Exists(Path.Combine(root, "node_modules", "yaml")), "the npm package 'yaml' is not installed: run scripts/test.sh (it runs npm ci)");
        var start = new ProcessStartInfo("node") { WorkingDirectory = root, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { Path.Combine(root, "scripts", "lint-deploy.mjs"), "dotnet", Path.Combine(AppContext.BaseDirectory, "sidekick.dll") })
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, await stderr);
        Assert.Contains("check out", stdout, StringComparison.Ordinal);
    }
}
