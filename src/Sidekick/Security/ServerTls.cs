using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Sidekick.Cli;

namespace Sidekick.Security;

/// <summary>
/// TLS for the listener: --cert/--key (hot reloaded) or --auto-tls-host. HTTP/1.1 and HTTP/2 via ALPN,
/// TLS 1.2 up to --tls-max.
/// </summary>
internal sealed class ServerTls : IDisposable
{
    private readonly Func<X509Certificate2> _current;
    private readonly IDisposable? _owner;

    private ServerTls(Func<X509Certificate2> current, string? pem, IDisposable? owner, SslProtocols protocols)
    {
        _current = current;
        CertificatePem = pem;
        _owner = owner;
        Protocols = protocols;
    }

    /// <summary>The generated certificate in PEM (auto TLS only), served at /v1/certificates.</summary>
    public string? CertificatePem { get; }

    public SslProtocols Protocols { get; }

    public X509Certificate2 Current => _current();

    /// <summary>Null when TLS is not asked for.</summary>
    public static ServerTls? Create(SidekickOptions options, TextWriter stdout, TextWriter stderr, TimeProvider time, TimeSpan? pollInterval = null)
    {
        var lines = new Observability.ConsoleLines(options.Json, options.ProgramName, time);
        var protocols = options.TlsMax == "1.2" ? SslProtocols.Tls12 : SslProtocols.Tls12 | SslProtocols.Tls13;
        var hasCert = !string.IsNullOrEmpty(options.Cert);
        var hasKey = !string.IsNullOrEmpty(options.Key);
        if (hasCert != hasKey)
        {
            throw new FatalException(hasCert ? "--cert is set but --key is not: both are needed to serve TLS" : "--key is set but --cert is not: both are needed to serve TLS");
        }

        if (hasCert)
        {
            var reloading = new ReloadingCertificate(options.Cert!, options.Key!, options.KeyPassword, pollInterval ?? TimeSpan.FromMinutes(1), time, stderr, lines);
            return new ServerTls(() => reloading.Current, null, reloading, protocols);
        }

        if (!string.IsNullOrEmpty(options.AutoTlsHost))
        {
            var (certificate, pem) = AutoTlsCertificate.Create(options.AutoTlsHost, time);
            if (lines.Json)
            {
                stdout.WriteLine(AutoTlsCertificate.FingerprintLine(options.AutoTlsHost, certificate, lines));
            }
            else
            {
                stdout.Write(AutoTlsCertificate.Fingerprint(options.AutoTlsHost, certificate));
            }
            return new ServerTls(() => certificate, pem, certificate, protocols);
        }

        return null;
    }

    public void Configure(HttpsConnectionAdapterOptions https)
    {
        https.SslProtocols = Protocols;
        https.ServerCertificateSelector = (_, _) => _current();
    }

    public void Dispose() => _owner?.Dispose();
}
