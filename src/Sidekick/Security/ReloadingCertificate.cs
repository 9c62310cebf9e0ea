using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Sidekick.Cli;

namespace Sidekick.Security;

/// <summary>
/// The server certificate from --cert/--key, reloaded when the files change without a restart and without
/// dropping connections (new handshakes get the new certificate). Directory watching catches ordinary
/// writes to the two files (events for the directory's other files are ignored: a log written next to the
/// certificate must not make every write a reload check); a periodic check of the files' contents also
/// catches Kubernetes secret updates, which swap a symlink. A reload that fails keeps the current
/// certificate and says so once on stderr, when it still fails <see cref="ReportAfter"/> later.
/// </summary>
internal sealed class ReloadingCertificate : IDisposable
{
    private readonly string _certPath;
    private readonly string _keyPath;
    private readonly string[] _fileNames;
    private readonly string? _password;
    private readonly TextWriter _stderr;
    private readonly Observability.ConsoleLines _lines;
    private readonly List<FileSystemWatcher> _watchers = [];
    private readonly ITimer _poll;
    private readonly ITimer _retry;
    private readonly Lock _gate = new();
    private volatile SslStreamCertificateContext _served;
    private string _fingerprint;
    private string? _lastError;
    private long _failingSince;
    private int _checks;
    private readonly TimeProvider _time;

    /// <summary>
    /// How long a pair must keep failing to load before it is reported. A deploy writes the certificate, then the key
    /// (cp, a rotation script): in between the pair does not match, and the retry half a second later loads it.
    /// Reported at once, every ordinary rotation printed error lines, ERROR records with --json, and alerts fired on a
    /// rotation that succeeded.
    /// </summary>
    internal static TimeSpan ReportAfter { get; } = TimeSpan.FromSeconds(3);

    public ReloadingCertificate(string certPath, string keyPath, string? password, TimeSpan pollInterval, TimeProvider time, TextWriter stderr,
        Observability.ConsoleLines? lines = null)
    {
        _lines = lines ?? Observability.ConsoleLines.Plain;
        _certPath = Path.GetFullPath(certPath);
        _keyPath = Path.GetFullPath(keyPath);
        _password = password;
        _stderr = stderr;
        _time = time;
        _served = Load();
        _fingerprint = ContentFingerprint();
        _fileNames = [Path.GetFileName(_certPath), Path.GetFileName(_keyPath)];
        foreach (var directory in new[] { Path.GetDirectoryName(_certPath)!, Path.GetDirectoryName(_keyPath)! }.Distinct())
        {
            var watcher = new FileSystemWatcher(directory) { NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.CreationTime };
            watcher.Changed += OnDirectoryEvent;
            watcher.Created += OnDirectoryEvent;
            // An editor or a deploy tool writes a temporary file and renames it over the certificate.
            watcher.Renamed += OnDirectoryEvent;
            watcher.EnableRaisingEvents = true;
            _watchers.Add(watcher);
        }

        _poll = time.CreateTimer(_ => TryReload(), null, pollInterval, pollInterval);
        _retry = time.CreateTimer(_ => TryReload(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public X509Certificate2 Current => _served.TargetCertificate;

    /// <summary>What handshakes send: the certificate and the intermediates its file holds after it.</summary>
    public SslStreamCertificateContext Context => _served;

    /// <summary>How many times the files were read to see whether they changed (for tests).</summary>
    internal int Checks => Volatile.Read(ref _checks);

    /// <summary>Reloads when the files' contents changed; returns true when a new certificate is in use.</summary>
    public bool TryReload()
    {
        lock (_gate)
        {
            try
            {
                _checks++;
                var fingerprint = ContentFingerprint();
                if (fingerprint == _fingerprint)
                {
                    return false;
                }

                _served = Load();
                _fingerprint = fingerprint;
                _lastError = null;
                _failingSince = 0;
                return true;
            }
            catch (Exception ex) when (ex is FatalException or IOException or UnauthorizedAccessException)
            {
                // Files are often written one after the other (certificate, then key), or truncated and then written:
                // try again shortly, and report a failure that outlasts ReportAfter, once.
                _retry.Change(TimeSpan.FromMilliseconds(500), Timeout.InfiniteTimeSpan);
                var now = _time.GetTimestamp();
                if (_failingSince == 0)
                {
                    _failingSince = now;
                }

                // A read error says nothing of which file ("Unable to read beyond the end of the stream."): named here.
                var error = ex is FatalException ? ex.Message : $"reading '{_certPath}' and '{_keyPath}': {ex.Message}";
                if (_time.GetElapsedTime(_failingSince, now) >= ReportAfter && _lastError != error)
                {
                    _lastError = error;
                    _stderr.WriteLine(_lines.Error($"certificate reload failed, keeping the current certificate: {error}"));
                }

                return false;
            }
        }
    }

    private void OnDirectoryEvent(object? sender, FileSystemEventArgs e)
    {
        if (e.Name is { } name && _fileNames.Contains(name))
        {
            TryReload();
        }
    }

    public void Dispose()
    {
        _poll.Dispose();
        _retry.Dispose();
        foreach (var watcher in _watchers)
        {
            watcher.Dispose();
        }
    }

    private SslStreamCertificateContext Load()
    {
        var certificate = CertificateFiles.Load(_certPath, _keyPath, _password);
        try
        {
            return CertificateFiles.ContextFor(certificate, _certPath);
        }
        catch (CryptographicException ex)
        {
            certificate.Dispose();
            throw new FatalException($"unable to load certs from {_certPath}: {ex.Message}");
        }
    }

    private string ContentFingerprint() =>
        Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(
            [.. File.ReadAllBytes(_certPath), .. File.ReadAllBytes(_keyPath)]));
}
