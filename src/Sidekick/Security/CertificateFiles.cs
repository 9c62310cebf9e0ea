using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Sidekick.Cli;

namespace Sidekick.Security;

/// <summary>Loads a certificate chain and its private key from PEM files into one usable certificate.</summary>
internal static class CertificateFiles
{
    public static X509Certificate2 Load(string certPath, string keyPath, string? password)
    {
        var certPem = FileText.Read(certPath, "the public key");

        X509Certificate2 leaf;
        try
        {
            leaf = X509Certificate2.CreateFromPem(certPem);
        }
        catch (CryptographicException ex)
        {
            throw new FatalException($"unable to load certs from {certPath}: {ex.Message}");
        }

        using (leaf)
        {
            using var key = PemKeyReader.Read(keyPath, password);
            try
            {
                using var paired = key switch
                {
                    RSA rsa => leaf.CopyWithPrivateKey(rsa),
                    ECDsa ec => leaf.CopyWithPrivateKey(ec),
                    _ => throw new FatalException($"unsupported private key type in {keyPath}"),
                };

                // A PKCS#12 round trip gives a certificate whose key the TLS stack can use on every platform.
                return X509CertificateLoader.LoadPkcs12(paired.Export(X509ContentType.Pkcs12), null);
            }
            catch (Exception ex) when (ex is CryptographicException or ArgumentException)
            {
                throw new FatalException($"unable to load certs: the private key {keyPath} does not match the certificate {certPath} ({ex.Message})");
            }
        }
    }

    /// <summary>
    /// What a handshake sends for <paramref name="certificate"/> (with its key): it and the intermediate certificates
    /// that follow it in <paramref name="certPath"/> (a <c>fullchain.pem</c>), the chain built once here rather than
    /// on each handshake, and never fetched from the network.
    /// </summary>
    public static SslStreamCertificateContext ContextFor(X509Certificate2 certificate, string? certPath) =>
        SslStreamCertificateContext.Create(certificate, certPath is null ? null : LoadChain(certPath), offline: true);

    /// <summary>The intermediate certificates that follow the leaf in a chain file.</summary>
    public static X509Certificate2Collection LoadChain(string certPath)
    {
        var all = new X509Certificate2Collection();
        all.ImportFromPemFile(certPath);
        var chain = new X509Certificate2Collection();
        for (var i = 1; i < all.Count; i++)
        {
            chain.Add(all[i]);
        }

        return chain;
    }
}
