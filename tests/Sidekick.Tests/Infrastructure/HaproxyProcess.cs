using System.Diagnostics;
using System.Globalization;
using System.Text;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Infrastructure;

/// <summary>
/// HAProxy configured as the closest equivalent of sidekick's sites, for comparison runs only: the first
/// site's servers active, the second's as backups, fast health checks, <c>retries 3</c> and
/// <c>option redispatch</c> (HAProxy's answer to a dying server).
/// </summary>
internal sealed class HaproxyProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _directory;

    private HaproxyProcess(Process process, string directory, int port)
    {
        _process = process;
        _directory = directory;
        Client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
    }

    public HttpClient Client { get; }

    public static async Task<HaproxyProcess> StartAsync(TestBackend[] site1, TestBackend[] site2)
    {
        var port = SidekickProcess.FreePort();
        var directory = Directory.CreateTempSubdirectory("haproxy-").FullName;
        var config = new StringBuilder(string.Create(CultureInfo.InvariantCulture, $"""
            global
              maxconn 4000
            defaults
              mode http
              timeout connect 2s
              timeout client 60s
              timeout server 60s
              option http-keep-alive
              retries 3
              option redispatch
            frontend fe
              bind 127.0.0.1:{port}
              default_backend be
            backend be
              balance leastconn
              option httpchk GET /health
            """));
        config.Append('\n');
        foreach (var (backend, backup) in site1.Select(b => (b, "")).Concat(site2.Select(b => (b, " backup"))))
        {
            config.Append(CultureInfo.InvariantCulture, $"  server {backend.Name} 127.0.0.1:{backend.Port} check inter 100ms fall 1 rise 1{backup}\n");
        }

        var path = Path.Combine(directory, "haproxy.cfg");
        await File.WriteAllTextAsync(path, config.ToString());
        var start = new ProcessStartInfo("haproxy") { UseShellExecute = false };
        start.ArgumentList.Add("-db");
        start.ArgumentList.Add("-f");
        start.ArgumentList.Add(path);
        var haproxy = new HaproxyProcess(Process.Start(start)!, directory, port);
        for (var i = 0; i < 100; i++)
        {
            try
            {
                using var response = await haproxy.Client.GetAsync(new Uri("/health", UriKind.Relative));
                if (response.IsSuccessStatusCode)
                {
                    return haproxy;
                }
            }
            catch (HttpRequestException)
            {
            }

            await Task.Delay(50);
        }

        await haproxy.DisposeAsync();
        throw new InvalidOperationException("haproxy did not start");
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        if (!_process.HasExited)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
        Directory.Delete(_directory, recursive: true);
    }
}
