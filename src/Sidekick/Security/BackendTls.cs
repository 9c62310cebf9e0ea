using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Sidekick.Cli;

namespace Sidekick.Security;

/// <summary>
/// TLS towards https backends: the system roots or only the --cacert bundle, --insecure, a client
/// certificate for mutual TLS, TLS 1.2 up to --tls-max. SocketsHttpHandler resumes TLS sessions per target
/// host by itself. Loaded once at start; every failure is one clear line.
/// </summary>
internal sealed class BackendTls
{
    private readonly SidekickOptions _options;
    private readonly X509Certificate2Collection? _trust;
    private readonly X509Certificate2? _clientCertificate;

    private BackendTls(SidekickOptions options, X509Certificate2Collection? trust, X509Certificate2? clientCertificate)
    {
        _options = options;
        _trust = trust;
        _clientCertificate = clientCertificate;
    }

    public static BackendTls Load(SidekickOptions options)
    {
        X509Certificate2Collection? trust = null;
        if (!string.IsNullOrEmpty(options.CaCert))
        {
            trust = [];
            var pem = FileText.Read(options.CaCert, "the CA certificate");
            try
            {
                trust.ImportFromPem(pem);
            }
            catch (CryptographicException ex)
            {
                throw new FatalException($"unable to load CA certificate {options.CaCert}: {ex.Message}");
            }

            if (trust.Count == 0)
            {
                throw new FatalException($"unable to load CA certificate: {options.CaCert} is not valid certificate");
            }
        }

        var hasCert = !string.IsNullOrEmpty(options.ClientCert);
        var hasKey = !string.IsNullOrEmpty(options.ClientKey);
        if (hasCert != hasKey)
        {
            throw new FatalException("both --client-cert and --client-key must be specified");
        }

        var client = hasCert ? CertificateFiles.Load(options.ClientCert!, options.ClientKey!, null) : null;
        return new BackendTls(options, trust, client);
    }

    /// <summary>Options for one site; <paramref name="targetHost"/> is the name used for SNI and verification.</summary>
    public SslClientAuthenticationOptions Create(string targetHost)
    {
        var ssl = new SslClientAuthenticationOptions
        {
            TargetHost = targetHost,
            EnabledSslProtocols = _options.TlsMax == "1.2" ? SslProtocols.Tls12 : SslProtocols.Tls12 | SslProtocols.Tls13,
        };

        if (_clientCertificate is not null)
        {
            ssl.ClientCertificates = [_clientCertificate];
        }

        if (_options.Insecure)
        {
#pragma warning disable CA5359 // --insecure asks for exactly this.
            ssl.RemoteCertificateValidationCallback = static (_, _, _, _) => true;
#pragma warning restore CA5359
        }
        else if (_trust is not null)
        {
            var trust = _trust;
            ssl.CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
            };
            ssl.CertificateChainPolicy.CustomTrustStore.AddRange(trust);
        }

        return ssl;
    }
}
