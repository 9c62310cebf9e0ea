using System.Net;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Security;

/// <summary>
/// The password of an encrypted --key without putting it on the command line (which every user can read in
/// /proc/PID/cmdline): from --key-password-file or SIDEKICK_KEY_PASSWORD. Run as processes.
/// </summary>
[Collection(nameof(HeavyTests))]
public sealed class KeyPasswordTests
{
    private const string Password = "s3cret-Pa55";

    private static string EncryptedKey(TestCertificates certificates, string plainKey)
    {
        var encrypted = Path.Combine(certificates.Directory, "encrypted.key");
        TestCertificates.OpenSsl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", plainKey, "-out", encrypted, "-passout", "pass:" + Password);
        return encrypted;
    }

    /// <summary>Waits until sidekick answers over TLS with the certificate it loaded (any status: no backend is up).</summary>
    private static async Task AssertServesTlsAsync(SidekickProcess sidekick, int port)
    {
        using var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = HttpClientHandler.DangerousAcceptAnyServerCertificateValidator };
        using var client = new HttpClient(handler);
        for (var deadline = Environment.TickCount64 + 30000; ; await Task.Delay(50))
        {
            Assert.False(sidekick.Process.HasExited, "sidekick exited: " + sidekick.Stderr);
            try
            {
                using var response = await client.GetAsync($"https://127.0.0.1:{port}/v1/health");
                Assert.True(response.StatusCode is HttpStatusCode.OK or HttpStatusCode.BadGateway);
                return;
            }
            catch (HttpRequestException) when (Environment.TickCount64 < deadline)
            {
            }
        }
    }

    [Fact]
    public async Task A_password_file_opens_the_key_and_stays_out_of_the_process_list()
    {
        using var certificates = new TestCertificates();
        var leaf = certificates.Leaf("leaf");
        var key = EncryptedKey(certificates, leaf.KeyPath);
        var file = Path.Combine(certificates.Directory, "password");
        await File.WriteAllTextAsync(file, Password + "\n"); // as `echo` and secret stores write it
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.Start("--address", $"127.0.0.1:{port}", "--cert", leaf.CertPath, "--key", key, "--key-password-file", file, "http://127.0.0.1:1");
        await AssertServesTlsAsync(sidekick, port);
        Assert.DoesNotContain(Password, await File.ReadAllTextAsync($"/proc/{sidekick.Process.Id}/cmdline"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_variable_opens_the_key()
    {
        using var certificates = new TestCertificates();
        var leaf = certificates.Leaf("leaf");
        var key = EncryptedKey(certificates, leaf.KeyPath);
        var port = SidekickProcess.FreePort();
        await using var sidekick = SidekickProcess.StartIn(Environment.CurrentDirectory, new Dictionary<string, string> { ["SIDEKICK_KEY_PASSWORD"] = Password },
            "--address", $"127.0.0.1:{port}", "--cert", leaf.CertPath, "--key", key, "http://127.0.0.1:1");
        await AssertServesTlsAsync(sidekick, port);
    }

    [Fact]
    public async Task A_wrong_password_in_the_file_is_one_line_that_never_shows_it()
    {
        using var certificates = new TestCertificates();
        var leaf = certificates.Leaf("leaf");
        var key = EncryptedKey(certificates, leaf.KeyPath);
        var file = Path.Combine(certificates.Directory, "password");
        await File.WriteAllTextAsync(file, "wrong-guess\n");
        var (exitCode, stdout, stderr) = await SidekickProcess.RunAsync(
            new Dictionary<string, string> { ["SIDEKICK_KEY_PASSWORD"] = Password }, // the file wins over the variable
            "--address", "127.0.0.1:0", "--cert", leaf.CertPath, "--key", key, "--key-password-file", file, "http://127.0.0.1:1");
        Assert.Equal(1, exitCode);
        Assert.StartsWith($"sidekick: unable to decrypt private key {key}: wrong key password or damaged key", stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("wrong-guess", stderr, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stdout.Trim());
    }
}
