using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Sidekick.Cli;
using Sidekick.Hosting;
using Sidekick.Tests.Integration;

namespace Sidekick.Tests.Security;

public sealed class BackendTlsTests
{
    /// <summary>An HTTPS backend on loopback, optionally requiring a client certificate signed by the test CA.</summary>
    internal static async Task<(WebApplication App, int Port)> StartTlsBackendAsync(X509Certificate2 certificate, X509Certificate2? requireClientCa)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, listen => listen.UseHttps(https =>
        {
            https.ServerCertificate = certificate;
            if (requireClientCa is not null)
            {
                https.ClientCertificateMode = ClientCertificateMode.RequireCertificate;
                https.ClientCertificateValidation = (client, _, _) =>
                {
                    using var chain = new X509Chain();
                    chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                    chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                    chain.ChainPolicy.CustomTrustStore.Add(requireClientCa);
                    return chain.Build(client);
                };
            }
        })));
        var app = builder.Build();
        app.Run(context => context.Response.WriteAsync(context.Connection.ClientCertificate?.Subject ?? "no client certificate"));
        await app.StartAsync();
        var port = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
        return (app, port);
    }

    private static async Task<(SidekickInstance Instance, HttpClient Client)> StartSidekickAsync(int backendPort, Func<SidekickOptions, SidekickOptions> configure)
    {
        var port = Sidekick.Tests.Infrastructure.SidekickProcess.FreePort();
        var options = configure(SidekickHarness.FastOptions with
        {
            Address = $"127.0.0.1:{port}",
            HealthPath = "/",
            ReadHealthPath = "/",
            Sites = [$"https://localhost:{backendPort}"],
        });
        var instance = SidekickApp.Create(options, new SidekickSeams { Stdout = TextWriter.Null, Stderr = TextWriter.Null });
        await instance.Server.StartAsync();
        return (instance, new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") });
    }

    private static async Task WaitForProbeAsync(SidekickInstance instance)
    {
        // Generous: the full suite on two busy cores has delayed a first probe past 15 s (seen twice).
        var deadline = Environment.TickCount64 + 45000;
        while (instance.Server.Topology.Current.AllBackends.Single().GetHealthSnapshot().LastProbe is null)
        {
            Assert.True(Environment.TickCount64 < deadline, "no probe result");
            await Task.Delay(25);
        }
    }

    [Fact]
    public async Task Mutual_tls_to_a_backend_that_requires_a_client_certificate()
    {
        using var certificates = new TestCertificates();
        var server = certificates.Leaf("backend");
        var client = certificates.Leaf("sidekick-client", clientAuth: true);
        var (backend, backendPort) = await StartTlsBackendAsync(server.Certificate, certificates.Ca);
        await using var _ = backend;
        var (instance, http) = await StartSidekickAsync(backendPort, o => o with
        {
            CaCert = certificates.CaPath, ClientCert = client.CertPath, ClientKey = client.KeyPath,
        });
        await using (instance)
        using (http)
        {
            await WaitForProbeAsync(instance);
            Assert.True(instance.Server.Topology.Current.AllBackends.Single().IsUp);
            Assert.Equal("CN=sidekick-client", await http.GetStringAsync("/x"));
        }
    }

    [Fact]
    public async Task Without_the_client_certificate_the_backend_stays_down()
    {
        using var certificates = new TestCertificates();
        var server = certificates.Leaf("backend");
        var (backend, backendPort) = await StartTlsBackendAsync(server.Certificate, certificates.Ca);
        await using var _ = backend;
        var (instance, http) = await StartSidekickAsync(backendPort, o => o with { CaCert = certificates.CaPath });
        await using (instance)
        using (http)
        {
            await WaitForProbeAsync(instance);
            Assert.False(instance.Server.Topology.Current.AllBackends.Single().IsUp);
        }
    }

    [Fact]
    public async Task Insecure_accepts_a_self_signed_backend_and_a_wrong_cacert_refuses_it()
    {
        using var certificates = new TestCertificates();
        using var other = new TestCertificates();
        var server = certificates.Leaf("backend");
        var (backend, backendPort) = await StartTlsBackendAsync(server.Certificate, null);
        await using var _ = backend;

        var (insecure, insecureClient) = await StartSidekickAsync(backendPort, o => o with { Insecure = true });
        await using (insecure)
        using (insecureClient)
        {
            await WaitForProbeAsync(insecure);
            Assert.Equal("no client certificate", await insecureClient.GetStringAsync("/x"));
        }

        var (wrong, wrongClient) = await StartSidekickAsync(backendPort, o => o with { CaCert = other.CaPath });
        await using (wrong)
        using (wrongClient)
        {
            await WaitForProbeAsync(wrong);
            var backendState = wrong.Server.Topology.Current.AllBackends.Single();
            Assert.False(backendState.IsUp);
            Assert.Contains("TLS", backendState.GetHealthSnapshot().LastDownReason, StringComparison.Ordinal);
        }

        var (right, rightClient) = await StartSidekickAsync(backendPort, o => o with { CaCert = certificates.CaPath });
        await using (right)
        using (rightClient)
        {
            await WaitForProbeAsync(right);
            Assert.True(right.Server.Topology.Current.AllBackends.Single().IsUp);
        }
    }

    [Fact]
    public async Task The_backends_TLS_name_is_its_own_whatever_Host_the_client_sends()
    {
        // The client's Host goes to the backend as sent (SigV4 signs it), but it must not name the backend for TLS:
        // left to SocketsHttpHandler, it was the SNI, the name the certificate was checked against and the key of the
        // connection pool, so a client could fail the handshake (the backend marked down) or open a connection per
        // spelling of a Host.
        using var certificates = new TestCertificates();
        var server = certificates.Leaf("backend");
        var (backend, backendPort, names, hosts) = await StartNamingBackendAsync(server.Certificate);
        await using var running = backend;

        var (instance, http) = await StartSidekickAsync(backendPort, o => o with { CaCert = certificates.CaPath });
        await using (instance)
        using (http)
        {
            await WaitForProbeAsync(instance);
            var state = instance.Server.Topology.Current.AllBackends.Single();
            Assert.True(state.IsUp);

            string[] sent = ["evil.example", "LOCALHOST", "LoCaLhOsT", "localhost.", "127.0.0.2", "x.example:1"];
            for (var i = 0; i < 12; i++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, $"/o{i}");
                request.Headers.Host = sent[i % sent.Length];
                using var response = await http.SendAsync(request);
                Assert.Equal((HttpStatusCode.OK, "ok"), (response.StatusCode, await response.Content.ReadAsStringAsync()));
            }

            Assert.Equal(sent.Concat(sent), hosts.Where(h => h != $"localhost:{backendPort}"));
            Assert.All(names, name => Assert.Equal("localhost", name));
            // One connection for the twelve (and the probes'), not one per Host.
            Assert.InRange(names.Count, 1, 3);
            Assert.True(state.IsUp);
        }
    }

    [Fact]
    public async Task Each_backend_of_a_site_is_named_by_its_own_host()
    {
        // One connection pool serves the whole site, but each backend is checked against the name it was given: a
        // site of a name and an address must not present the first backend's name to the second.
        using var certificates = new TestCertificates();
        var server = certificates.Leaf("backend");
        var (a, aPort, aNames, _) = await StartNamingBackendAsync(server.Certificate);
        var (b, bPort, bNames, _) = await StartNamingBackendAsync(server.Certificate);
        await using var runningA = a;
        await using var runningB = b;

        var (instance, http) = await StartSidekickAsync(aPort, o => o with
        {
            CaCert = certificates.CaPath,
            Sites = [$"https://localhost:{aPort},https://127.0.0.1:{bPort}"],
        });
        await using (instance)
        using (http)
        {
            await Eventually.WaitUntilAsync(() => instance.Server.Topology.Current.AllBackends.All(backend => backend.IsUp), timeoutMs: 45000);
            for (var i = 0; i < 4; i++)
            {
                Assert.Equal("ok", await http.GetStringAsync($"/o{i}"));
            }

            Assert.NotEmpty(aNames);
            Assert.All(aNames, name => Assert.Equal("localhost", name));
            // An address is checked against the certificate's IP entries and never sent as SNI (RFC 6066 §3).
            Assert.NotEmpty(bNames);
            Assert.All(bNames, name => Assert.Equal("(none)", name));
        }
    }

    /// <summary>An HTTPS backend answering "ok" that records the SNI of each handshake and the Host of each request.</summary>
    private static async Task<(WebApplication App, int Port, ConcurrentQueue<string> Names, ConcurrentQueue<string> Hosts)> StartNamingBackendAsync(
        X509Certificate2 certificate)
    {
        var names = new ConcurrentQueue<string>();
        var hosts = new ConcurrentQueue<string>();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, listen => listen.UseHttps(https =>
            https.ServerCertificateSelector = (_, name) =>
            {
                names.Enqueue(string.IsNullOrEmpty(name) ? "(none)" : name);
                return certificate;
            })));
        var app = builder.Build();
        app.Run(context =>
        {
            hosts.Enqueue(context.Request.Host.Value ?? "");
            return context.Response.WriteAsync("ok");
        });
        await app.StartAsync();
        var port = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
        return (app, port, names, hosts);
    }

    [Fact]
    public void Bad_ca_bundle_and_half_client_pair_are_fatal_one_liners()
    {
        using var certificates = new TestCertificates();
        var notPem = Path.Combine(certificates.Directory, "empty.pem");
        File.WriteAllText(notPem, "nothing here");
        var error = Assert.Throws<FatalException>(() => Sidekick.Security.BackendTls.Load(new SidekickOptions { CaCert = notPem }));
        Assert.Contains("is not valid certificate", error.Message, StringComparison.Ordinal);
        var half = Assert.Throws<FatalException>(() => Sidekick.Security.BackendTls.Load(new SidekickOptions { ClientCert = "x.crt" }));
        Assert.Equal("both --client-cert and --client-key must be specified", half.Message);
    }
}
