using System.Net.Security;
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
    private readonly Func<SslStreamCertificateContext> _context;
    private readonly IDisposable? _owner;

    private ServerTls(Func<SslStreamCertificateContext> context, string? pem, IDisposable? owner, SslProtocols protocols)
    {
        _context = context;
        CertificatePem = pem;
        _owner = owner;
        Protocols = protocols;
    }

    /// <summary>The generated certificate in PEM (auto TLS only), served at /v1/certificates.</summary>
    public string? CertificatePem { get; }

    public SslProtocols Protocols { get; }

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
            return new ServerTls(() => reloading.Context, null, reloading, protocols);
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
            var context = CertificateFiles.ContextFor(certificate, certPath: null);
            return new ServerTls(() => context, pem, certificate, protocols);
        }

        return null;
    }

    public void Configure(HttpsConnectionAdapterOptions https)
    {
        https.SslProtocols = Protocols;
        // Kestrel asks for a certificate or a selector up front; each handshake is then given the context instead.
        https.ServerCertificateSelector = (_, _) => _context().TargetCertificate;
        https.OnAuthenticate = (_, ssl) =>
        {
            // A certificate from the selector goes out alone (SslStream looks for its issuers only in the machine's
            // stores): the intermediates of a fullchain.pem were never sent, and clients that do not hold them (most,
            // for a public or an internal CA) failed the handshake. The context carries them.
            ssl.ServerCertificateContext = _context();
            ssl.ServerCertificate = null;
            ssl.ServerCertificateSelectionCallback = null;
        };
    }

    public void Dispose() => _owner?.Dispose();
}
