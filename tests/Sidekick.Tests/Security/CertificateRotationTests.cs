using Microsoft.Extensions.Time.Testing;
using Sidekick.Security;
using Sidekick.Tests.Infrastructure;

namespace Sidekick.Tests.Security;

/// <summary>Rotating --cert/--key on a running process: a rotation in steps is quiet, a pair that stays broken is said once.</summary>
public sealed class CertificateRotationTests
{
    [Fact]
    public async Task A_rotation_that_writes_the_certificate_then_the_key_reports_no_failure_once_the_pair_loads()
    {
        // docs/tls-and-dns.md: "A pair that fails to load (for example, the certificate written before the key) is
        // retried shortly; the current certificate stays in use, and a persistent failure is reported once on stderr."
        using var certificates = new TestCertificates();
        var first = certificates.Leaf("first");
        var second = certificates.Leaf("second");
        var stderr = new StringWriter();
        using var reloading = new ReloadingCertificate(first.CertPath, first.KeyPath, null, TimeSpan.FromHours(1), TimeProvider.System,
            TextWriter.Synchronized(stderr));

        File.Copy(second.CertPath, first.CertPath, overwrite: true);
        await Task.Delay(300); // a deploy tool writing one file, then the other
        File.Copy(second.KeyPath, first.KeyPath, overwrite: true);
        await Eventually.WaitUntilAsync(() => reloading.Current.Thumbprint == second.Certificate.Thumbprint);
        await Task.Delay(1000);

        Assert.True(stderr.ToString().Length == 0, $"a rotation that succeeded printed: {stderr}");
    }

    [Fact]
    public void A_pair_that_stays_broken_is_reported_once_after_the_retries_and_the_certificate_in_use_stays()
    {
        using var certificates = new TestCertificates();
        var first = certificates.Leaf("first");
        var second = certificates.Leaf("second");
        var stderr = new StringWriter();
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var reloading = new ReloadingCertificate(first.CertPath, first.KeyPath, null, TimeSpan.FromHours(1), time, TextWriter.Synchronized(stderr));

        // The new certificate, and the old key left beside it: a pair that does not match, for good.
        File.Copy(second.CertPath, first.CertPath, overwrite: true);
        Assert.False(reloading.TryReload());
        Assert.True(stderr.ToString().Length == 0, $"reported at the first failure: {stderr}");

        // The retries (every half second) go on failing past the time a rotation in steps takes: said once.
        for (var waited = TimeSpan.Zero; waited <= ReloadingCertificate.ReportAfter + TimeSpan.FromSeconds(2); waited += TimeSpan.FromMilliseconds(500))
        {
            time.Advance(TimeSpan.FromMilliseconds(500));
        }

        var lines = stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.Contains("certificate reload failed, keeping the current certificate", lines[0], StringComparison.Ordinal);
        Assert.Equal(first.Certificate.Thumbprint, reloading.Current.Thumbprint);
    }
}
