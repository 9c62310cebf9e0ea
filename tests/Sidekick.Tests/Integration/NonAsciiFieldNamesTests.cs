using System.Net;
using System.Net.Sockets;
using System.Text;
using Sidekick.Forwarding;
using Sidekick.Hosting;
using Sidekick.Topology;

namespace Sidekick.Tests.Integration;

/// <summary>
/// Backend response fields with bytes above 0x7F (S3 user metadata, <c>x-amz-meta-*</c>, which MinIO sends raw) are
/// written back as Latin-1 under the names they were seen with. The names are the backend's, so any user who writes
/// objects chooses them: past the number of names remembered, every name is written as Latin-1, rather than every
/// later such field, of any object, becoming a 502 that marked the backend down until a restart.
/// </summary>
public sealed class NonAsciiFieldNamesTests
{
    [Theory]
    [InlineData("http1")]
    [InlineData("yarp")]
    public async Task More_names_than_are_remembered_still_pass_their_bytes_and_the_backend_stays_up(string forwarder)
    {
        await using var backend = new RawBackend(request =>
        {
            var name = request.Target.StartsWith("/many/", StringComparison.Ordinal) ? "X-Amz-Meta-N" + request.Target[6..] : "X-Amz-Meta-Title";
            return RawResponse.Text($"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{name}: caf\u00c3\u00a9\r\n\r\nok");
        });
        var url = backend.Url.ToString().TrimEnd('/');
        SiteDefinition[] sites = [new(1, [new BackendDefinition(backend.Url, url, new Uri(url + "/health"))])];
        await using var sidekick = await SidekickHarness.StartAsync(SidekickHarness.FastOptions, sites,
            new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", forwarder)) });

        var failed = new List<string>();
        for (var i = 0; i < Latin1Fields.MaxNames + 100; i++)
        {
            using var response = await sidekick.Client.GetAsync($"/many/{i}");
            if (response.StatusCode != HttpStatusCode.OK)
            {
                failed.Add($"/many/{i}: {(int)response.StatusCode}");
            }
        }

        Assert.Empty(failed);
        // Another user's object, under a name never seen before: its value's bytes as the backend sent them.
        var answer = await RawGetAsync(sidekick.BaseAddress.Port, "/other/object");
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", answer, StringComparison.Ordinal);
        Assert.Contains("\r\nX-Amz-Meta-Title: caf\u00c3\u00a9\r\n", answer, StringComparison.Ordinal);
        Assert.True(sidekick.Server.Topology.Current.AllBackends.Single().IsUp);
    }

    private static async Task<string> RawGetAsync(int port, string target)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
        using var answer = new MemoryStream();
        await stream.CopyToAsync(answer).WaitAsync(TimeSpan.FromSeconds(30));
        return Encoding.Latin1.GetString(answer.ToArray());
    }
}
