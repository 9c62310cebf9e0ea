using System.Diagnostics;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Packaging;

/// <summary>
/// scripts/version.sh, which names the packages and is stamped into --version and sidekick_build_info, run in a
/// scratch git repository of its own (a copy of the script, real git) so tags and edits do not touch this one.
/// </summary>
public sealed class VersionScriptTests : IDisposable
{
    private readonly DirectoryInfo _repository = Directory.CreateTempSubdirectory("sidekick-version-");

    public VersionScriptTests()
    {
        Directory.CreateDirectory(Path.Combine(_repository.FullName, "scripts"));
        File.Copy(Path.Combine(S3rverProcess.RepositoryRoot, "scripts", "version.sh"), Path.Combine(_repository.FullName, "scripts", "version.sh"));
        Git("init", "-q");
        Git("add", "scripts");
        Git("commit", "-q", "-m", "first");
    }

    [Fact]
    public void An_untagged_commit_is_0_0_0_and_its_short_id()
    {
        var shortId = Git("rev-parse", "--short=7", "HEAD");
        Assert.Equal($"0.0.0-g{shortId}", Version());
        Assert.Equal($"0.0.0~g{shortId}", Version("--debian"));
        Assert.Equal(Git("rev-parse", "HEAD"), Version("--commit"));
    }

    [Fact]
    public void A_release_tag_gives_its_number_and_outranks_its_pre_releases()
    {
        Git("tag", "v1.2.3-rc.1");
        Assert.Equal("1.2.3-rc.1", Version());
        Assert.Equal("1.2.3~rc.1", Version("--debian"));
        Git("tag", "v1.2.3");
        Git("tag", "v1.2.2");
        Git("tag", "vnext"); // not a version: ignored
        Assert.Equal("1.2.3", Version());
        Assert.Equal("1.2.3", Version("--debian"));
    }

    [Fact]
    public void Changed_sources_never_carry_a_release_number()
    {
        Git("tag", "v1.2.3");
        File.AppendAllText(Path.Combine(_repository.FullName, "scripts", "version.sh"), "# edited\n");
        Assert.Equal("1.2.3-dirty", Version());
        Assert.Equal("1.2.3~dirty", Version("--debian")); // sorts before the release itself
    }

    [Fact]
    public void Outside_git_the_environment_decides_and_a_bad_version_is_one_line_and_exit_2()
    {
        Directory.Delete(Path.Combine(_repository.FullName, ".git"), recursive: true);
        Assert.Equal("0.0.0-dev", Version());
        Assert.Equal("2.0.0-beta.1", Version(new Dictionary<string, string> { ["SIDEKICK_VERSION"] = "2.0.0-beta.1" }));
        var (exitCode, stdout, stderr) = Run(new Dictionary<string, string> { ["SIDEKICK_VERSION"] = "2.0+x" });
        Assert.Equal(2, exitCode);
        Assert.Equal(string.Empty, stdout);
        Assert.Equal("version.sh: invalid SIDEKICK_VERSION '2.0+x': use X.Y.Z or X.Y.Z-PRE (e.g. 1.2.3, 1.2.3-rc.1)", stderr.Trim());
    }

    public void Dispose() => _repository.Delete(recursive: true);

    private string Version(string option = "") => Version(new Dictionary<string, string>(), option);

    private string Version(Dictionary<string, string> environment, string option = "")
    {
        var (exitCode, stdout, stderr) = Run(environment, option);
        Assert.True(exitCode == 0, stderr);
        return stdout.Trim();
    }

    private (int ExitCode, string Stdout, string Stderr) Run(Dictionary<string, string> environment, string option = "")
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _repository.FullName };
        start.ArgumentList.Add("scripts/version.sh");
        if (option.Length > 0)
        {
            start.ArgumentList.Add(option);
        }

        start.Environment.Remove("SIDEKICK_VERSION");
        start.Environment.Remove("SIDEKICK_COMMIT");
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout, stderr.Result);
    }

    private string Git(params string[] args)
    {
        var start = new ProcessStartInfo("git") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _repository.FullName };
        foreach (var arg in new[] { "-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "tag.gpgSign=false", "-c", "commit.gpgSign=false" }.Concat(args))
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"git {string.Join(' ', args)}: {stderr.Result}");
        return stdout.Trim();
    }
}
