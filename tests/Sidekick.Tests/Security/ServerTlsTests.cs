using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Sidekick.Cli;
using Sidekick.Hosting;
using Sidekick.Security;
using Sidekick.Tests.Infrastructure;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Security;

public sealed class ServerTlsTests
{
    private static SidekickOptions Options(TestBackend backend, int port) => SidekickHarness.FastOptions with
    {
        Address = $"127.0.0.1:{port}",
        Sites = [backend.Url.ToString()],
    };

    private static async Task<X509Certificate2> ServedCertificateAsync(int port, Version? version = null)
    {
        X509Certificate2? seen = null;
        using var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                {
                    seen = X509CertificateLoader.LoadCertificate(certificate!.GetRawCertData());
                    return true;
                },
            },
        };
        using var client = new HttpClient(handler);
        using var request = new HttpRequestMessage(HttpMethod.Get, $"https://127.0.0.1:{port}/v1/health")
        {
            Version = version ?? HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(version ?? HttpVersion.Version11, response.Version);
        return seen!;
    }

    [Fact]
    public async Task Static_certificate_is_served_over_http1_and_http2_and_hot_reloaded()
    {
        using var certificates = new TestCertificates();
        var first = certificates.Leaf("first");
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        var options = Options(backend, port) with { Cert = first.CertPath, Key = first.KeyPath };
        await using var instance = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null });
        await instance.Server.StartAsync();
        await WaitAsync(() => instance.Server.Topology.Current.ActiveSite is not null);

        Assert.Equal(first.Certificate.Thumbprint, (await ServedCertificateAsync(port)).Thumbprint);
        Assert.Equal(first.Certificate.Thumbprint, (await ServedCertificateAsync(port, HttpVersion.Version20)).Thumbprint);

        // Replace the files in place: the next handshake must see the new certificate, without a restart.
        var second = certificates.Leaf("second");
        File.Copy(second.CertPath, first.CertPath, overwrite: true);
        File.Copy(second.KeyPath, first.KeyPath, overwrite: true);
        var deadline = Environment.TickCount64 + 10000;
        while ((await ServedCertificateAsync(port)).Thumbprint != second.Certificate.Thumbprint)
        {
            Assert.True(Environment.TickCount64 < deadline, "the new certificate was not picked up");
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task A_chain_files_intermediates_are_sent_with_the_certificate()
    {
        // A fullchain.pem: the leaf, then the intermediate that signed it. A client that trusts only the root (most
        // clients of a public or an internal CA) verifies the leaf only if the handshake carries the intermediate.
        using var certificates = new TestCertificates();
        using var intermediateKey = RSA.Create(2048);
        var intermediateRequest = new CertificateRequest("CN=sidekick test intermediate", intermediateKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        intermediateRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        intermediateRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        using var intermediateSigned = intermediateRequest.Create(certificates.Ca, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(20), RandomNumberGenerator.GetBytes(16));
        using var intermediate = intermediateSigned.CopyWithPrivateKey(intermediateKey);
        using var leafKey = RSA.Create(2048);
        var leafRequest = new CertificateRequest("CN=chained", leafKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        leafRequest.CertificateExtensions.Add(san.Build());
        leafRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var leaf = leafRequest.Create(intermediate, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(10), RandomNumberGenerator.GetBytes(16));
        var certPath = Path.Combine(certificates.Directory, "fullchain.pem");
        var keyPath = Path.Combine(certificates.Directory, "chained.key");
        File.WriteAllText(certPath, leaf.ExportCertificatePem() + "\n" + intermediateSigned.ExportCertificatePem() + "\n");
        File.WriteAllText(keyPath, leafKey.ExportPkcs8PrivateKeyPem());

        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        await using var instance = SidekickApp.Create(Options(backend, port) with { Cert = certPath, Key = keyPath },
            new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null });
        await instance.Server.StartAsync();

        var start = new ProcessStartInfo("openssl") { RedirectStandardError = true, RedirectStandardOutput = true, RedirectStandardInput = true };
        foreach (var argument in (string[])["s_client", "-connect", $"127.0.0.1:{port}", "-showcerts", "-CAfile", certificates.CaPath, "-verify_return_error"])
        {
            start.ArgumentList.Add(argument);
        }

        using var openssl = Process.Start(start)!;
        openssl.StandardInput.Close();
        var shown = await openssl.StandardOutput.ReadToEndAsync();
        var errors = await openssl.StandardError.ReadToEndAsync();
        await openssl.WaitForExitAsync();
        Assert.True(openssl.ExitCode == 0, $"openssl could not verify the server: {errors}");
        Assert.Equal(2, shown.Split('\n').Count(line => line.StartsWith("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal)));
        Assert.Contains("Verify return code: 0 (ok)", shown, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Symlink_swap_like_kubernetes_is_picked_up_by_polling()
    {
        using var certificates = new TestCertificates();
        var first = certificates.Leaf("one");
        var second = certificates.Leaf("two");
        var link = Path.Combine(certificates.Directory, "current");
        Directory.CreateSymbolicLink(link + ".crt", first.CertPath);
        Directory.CreateSymbolicLink(link + ".key", first.KeyPath);
        using var reloading = new ReloadingCertificate(link + ".crt", link + ".key", null, TimeSpan.FromMilliseconds(200), TimeProvider.System, TextWriter.Null);
        Assert.Equal(first.Certificate.Thumbprint, reloading.Current.Thumbprint);

        File.Delete(link + ".crt");
        File.Delete(link + ".key");
        File.CreateSymbolicLink(link + ".crt", second.CertPath);
        File.CreateSymbolicLink(link + ".key", second.KeyPath);
        await WaitAsync(() => reloading.Current.Thumbprint == second.Certificate.Thumbprint);
    }

    [Fact]
    public async Task Writes_to_other_files_next_to_the_certificate_do_not_make_it_reread()
    {
        using var certificates = new TestCertificates();
        var leaf = certificates.Leaf("quiet");
        using var reloading = new ReloadingCertificate(leaf.CertPath, leaf.KeyPath, null, TimeSpan.FromHours(1), TimeProvider.System, TextWriter.Null);

        // A log and other files written in the same directory, then the certificate itself rewritten as is.
        // Events arrive in order, so once the certificate's write was seen every earlier event was handled.
        var log = Path.Combine(certificates.Directory, "sidekick.log");
        for (var i = 0; i < 50; i++)
        {
            await File.AppendAllTextAsync(log, $"line {i}\n");
            await File.WriteAllTextAsync(Path.Combine(certificates.Directory, $"other{i % 5}.txt"), "x");
        }

        await File.WriteAllBytesAsync(leaf.CertPath, await File.ReadAllBytesAsync(leaf.CertPath));
        await WaitAsync(() => reloading.Checks > 0);
        await Task.Delay(200);
        Assert.InRange(reloading.Checks, 1, 3); // the certificate's own write raises one to three events
        Assert.Equal(leaf.Certificate.Thumbprint, reloading.Current.Thumbprint);
    }

    [Fact]
    public async Task Auto_tls_prints_the_fingerprint_and_serves_its_pem()
    {
        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        var stdout = new StringWriter();
        var options = Options(backend, port) with { AutoTlsHost = "127.0.0.1,localhost" };
        await using var instance = SidekickApp.Create(options, new SidekickSeams { Stdout = stdout, Stderr = TextWriter.Null });
        await instance.Server.StartAsync();
        await WaitAsync(() => instance.Server.Topology.Current.ActiveSite is not null);

        Assert.Contains("Generated TLS certificate for host '127.0.0.1,localhost'", stdout.ToString(), StringComparison.Ordinal);
        Assert.Matches(@"Certificate: ([0-9A-F]{2} ){15}[0-9A-F]{2}\n {13}([0-9A-F]{2} ){15}[0-9A-F]{2}\nPublic Key:  \S+=", stdout.ToString());
        var served = await ServedCertificateAsync(port);
        using var handler = new SocketsHttpHandler { SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true } };
        using var client = new HttpClient(handler);
        var pem = await client.GetStringAsync($"https://127.0.0.1:{port}/v1/certificates");
        Assert.Equal(served.Thumbprint, X509Certificate2.CreateFromPem(pem).Thumbprint);
        Assert.Contains("127.0.0.1", served.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single().Format(false), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Curl_negotiates_http2()
    {
        if (!File.Exists("/usr/bin/curl"))
        {
            Assert.Fail("curl is not installed: run scripts/test.sh");
        }

        await using var backend = await TestBackend.StartAsync("a");
        var port = SidekickProcess.FreePort();
        var options = Options(backend, port) with { AutoTlsHost = "127.0.0.1" };
        await using var instance = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null });
        await instance.Server.StartAsync();
        await WaitAsync(() => instance.Server.Topology.Current.ActiveSite is not null);
        var start = new System.Diagnostics.ProcessStartInfo("curl", ["-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}", $"https://127.0.0.1:{port}/x"]) { RedirectStandardOutput = true };
        using var curl = System.Diagnostics.Process.Start(start)!;
        var version = await curl.StandardOutput.ReadToEndAsync();
        await curl.WaitForExitAsync();
        Assert.Equal("2", version);
    }

    [Theory]
    [InlineData("genrsa")] // OpenSSL 3 writes PKCS#8 "ENCRYPTED PRIVATE KEY"
    [InlineData("traditional")] // legacy "Proc-Type: 4,ENCRYPTED" with AES-256-CBC
    [InlineData("traditional-des3")] // legacy with DES-EDE3-CBC
    public void Encrypted_keys_written_by_openssl_load_with_the_password(string format)
    {
        using var certificates = new TestCertificates();
        var leaf = certificates.Leaf("enc");
        var encrypted = Path.Combine(certificates.Directory, "enc-encrypted.key");
        switch (format)
        {
            case "genrsa":
                TestCertificates.OpenSsl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", leaf.KeyPath, "-out", encrypted, "-passout", "pass:s3cret");
                break;
            case "traditional":
                TestCertificates.OpenSsl("rsa", "-aes256", "-traditional", "-in", leaf.KeyPath, "-out", encrypted, "-passout", "pass:s3cret");
                break;
            default:
                TestCertificates.OpenSsl("rsa", "-des3", "-traditional", "-in", leaf.KeyPath, "-out", encrypted, "-passout", "pass:s3cret");
                break;
        }

        using var loaded = CertificateFiles.Load(leaf.CertPath, encrypted, "s3cret");
        Assert.True(loaded.HasPrivateKey);
        Assert.Equal(leaf.Certificate.Thumbprint, loaded.Thumbprint);

        var missing = Assert.Throws<FatalException>(() => CertificateFiles.Load(leaf.CertPath, encrypted, null));
        Assert.Contains("is encrypted, please give its password with --key-password-file, SIDEKICK_KEY_PASSWORD or --key-password", missing.Message, StringComparison.Ordinal);
        var wrong = Assert.Throws<FatalException>(() => CertificateFiles.Load(leaf.CertPath, encrypted, "nope"));
        Assert.Contains("unable to decrypt private key", wrong.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Mismatched_key_and_missing_files_are_one_clear_line()
    {
        using var certificates = new TestCertificates();
        var a = certificates.Leaf("a");
        var b = certificates.Leaf("b");
        Assert.Contains("does not match", Assert.Throws<FatalException>(() => CertificateFiles.Load(a.CertPath, b.KeyPath, null)).Message, StringComparison.Ordinal);
        Assert.Contains("unable to read the private key", Assert.Throws<FatalException>(() => CertificateFiles.Load(a.CertPath, "/nonexistent.key", null)).Message, StringComparison.Ordinal);
        var options = new SidekickOptions { Cert = a.CertPath };
        Assert.Contains("--key is not", Assert.Throws<FatalException>(() => ServerTls.Create(options, TextWriter.Null, TextWriter.Null, TimeProvider.System)).Message, StringComparison.Ordinal);
    }

    private static async Task WaitAsync(Func<bool> condition)
    {
        // Generous: the full suite on two busy cores has delayed a first probe past 15 s (seen twice).
        var deadline = Environment.TickCount64 + 45000;
        while (!condition())
        {
            Assert.True(Environment.TickCount64 < deadline, "timed out");
            await Task.Delay(25);
        }
    }
}
