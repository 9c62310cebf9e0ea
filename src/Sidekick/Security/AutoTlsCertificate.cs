using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Sidekick.Security;

/// <summary>
/// --auto-tls-host: an in-memory self-signed certificate (ECDSA P-256, one year) for the given names and
/// IPs, with its fingerprint printed like upstream so clients can pin it.
/// </summary>
internal static class AutoTlsCertificate
{
    public static (X509Certificate2 Certificate, string Pem) Create(string hosts, TimeProvider time)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("O=Acme Co", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        foreach (var host in hosts.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (IPAddress.TryParse(host, out var ip))
            {
                names.AddIpAddress(ip);
            }
            else
            {
                names.AddDnsName(host);
            }
        }

        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(
            X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment | X509KeyUsageFlags.KeyCertSign, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var now = time.GetUtcNow();
        using var created = request.CreateSelfSigned(now.AddMinutes(-5), now.AddDays(365));
        var certificate = X509CertificateLoader.LoadPkcs12(created.Export(X509ContentType.Pkcs12), null);
        return (certificate, created.ExportCertificatePem() + "\n");
    }

    /// <summary>The block upstream prints: SHA-256 of the certificate (hex, in two rows) and of its public key (base64).</summary>
    public static string Fingerprint(string hosts, X509Certificate2 certificate)
    {
        var (certificateHex, publicKey) = Hashes(certificate);
        var text = new StringBuilder();
        text.Append("Generated TLS certificate for host '").Append(hosts).Append("'\n\n");
        text.Append("Certificate: ").Append(certificateHex[..47]).Append('\n');
        text.Append("             ").Append(certificateHex[48..]).Append('\n');
        text.Append("Public Key:  ").Append(publicKey).Append("\n\n");
        return text.ToString();
    }

    /// <summary>The same as one --json line.</summary>
    public static string FingerprintLine(string hosts, X509Certificate2 certificate, Observability.ConsoleLines lines)
    {
        var (certificateHex, publicKey) = Hashes(certificate);
        return lines.Info($"generated TLS certificate for host '{hosts}'", ("Certificate", certificateHex), ("PublicKey", publicKey));
    }

    /// <summary>SHA-256 of the certificate as spaced hex bytes, and of its public key in base64.</summary>
    private static (string CertificateHex, string PublicKey) Hashes(X509Certificate2 certificate)
    {
        var certHash = SHA256.HashData(certificate.RawData);
        var keyHash = SHA256.HashData(certificate.PublicKey.ExportSubjectPublicKeyInfo());
        return (string.Join(' ', certHash.Select(b => b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture))), Convert.ToBase64String(keyHash));
    }
}
