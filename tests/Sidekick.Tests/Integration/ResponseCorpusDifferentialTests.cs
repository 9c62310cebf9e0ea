using System.Net;
using Sidekick.Hosting;
using Sidekick.Tests.Forwarding;
using Sidekick.Topology;
using Xunit.Abstractions;

namespace Sidekick.Tests.Integration;

/// <summary>
/// Each response of the corpus through the HTTP/1.1 path and through YARP: the client sees the same status
/// (and the same cut body) from both, and the next request on the same backend is answered correctly, so no
/// connection left out of step by a bad response is used again.
/// </summary>
public sealed class ResponseCorpusDifferentialTests(ITestOutputHelper output)
{
    /// <summary>
    /// Where the HTTP/1.1 path answers differently on purpose, and why. The test fails if one of these stops
    /// differing, so the list stays true.
    /// </summary>
    private static readonly Dictionary<string, string> KnownDifferences = new(StringComparer.Ordinal)
    {
        // HttpClient accepts a status below 100; Kestrel cannot send it, and the client gets no response at
        // all. The HTTP/1.1 path refuses the head: a 502 that says why.
        ["status-below-100"] = "HttpClient takes status 099, the client then gets nothing",
        // A transfer coding other than chunked: HttpClient ignores it (and frames by Content-Length or
        // chunked alone), YARP drops the hop-by-hop header, and the client gets a body in a coding it was not
        // told about. RFC 9112 §6.1: a coding the proxy does not know cannot be forwarded reliably; refused.
        ["transfer-encoding-gzip"] = "unknown transfer coding",
        ["transfer-encoding-gzip-chunked"] = "unknown transfer coding",
        ["transfer-encoding-identity"] = "unknown transfer coding",
        // HttpClient bounds a head by its bytes only; the HTTP/1.1 path also by its field lines
        // (BackendLimits.MaxResponseHeadFieldLines), so a head of thousands of tiny fields is refused.
        ["too-many-field-lines"] = "more field lines than the HTTP/1.1 path accepts",
    };

    [Fact]
    public async Task Both_paths_give_the_client_the_same_outcome_and_never_reuse_a_connection_out_of_step()
    {
        var corpus = ResponseCorpus.Load();
        var http1 = await OutcomesAsync("http1", corpus);
        var yarp = await OutcomesAsync("yarp", corpus);

        var differences = new List<string>();
        foreach (var (name, _, _) in corpus)
        {
            output.WriteLine($"{name,-42} http1: {http1[name],-14} yarp: {yarp[name]}");
            if ((http1[name] != yarp[name]) != KnownDifferences.ContainsKey(name))
            {
                differences.Add($"{name}: http1 {http1[name]}, yarp {yarp[name]}{(KnownDifferences.ContainsKey(name) ? " (listed as a known difference)" : "")}");
            }

            if (KnownDifferences.ContainsKey(name))
            {
                Assert.Equal("502 sidekick", http1[name]);
            }
        }

        Assert.True(differences.Count == 0, string.Join("\n", differences));
    }

    private static async Task<Dictionary<string, string>> OutcomesAsync(string path, IReadOnlyList<(string Name, byte[] Bytes, bool Close)> corpus)
    {
        var byTarget = corpus.ToDictionary(c => "/corpus/" + c.Name, c => new RawResponse(c.Bytes, c.Close));
        await using var backend = new RawBackend(request => byTarget.TryGetValue(request.Target, out var response)
            ? response
            : RawResponse.Text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        var options = SidekickHarness.FastOptions with { HealthDuration = TimeSpan.FromSeconds(5) };
        var url = backend.Url.ToString().TrimEnd('/');
        var sites = new[] { new SiteDefinition(1, [new BackendDefinition(backend.Url, url, new Uri(url + options.HealthPath))]) };
        await using var sidekick = await SidekickHarness.StartAsync(options, sites, new SidekickSeams { Environment = SidekickHarness.Variables(("SIDEKICK_FORWARDER", path)) });

        var outcomes = new Dictionary<string, string>();
        foreach (var (name, _, _) in corpus)
        {
            outcomes[name] = await OutcomeAsync(sidekick.Client, "/corpus/" + name);
            // The same backend again: a connection out of step would hand this request the rest of the last one.
            var after = await OutcomeAsync(sidekick.Client, "/after/" + name);
            Assert.True(after == "200 ok", $"{path}: the request after '{name}' got {after}");
        }

        return outcomes;
    }

    /// <summary>The status and whole body, or the status and "cut" when the body ended early, or "no response".</summary>
    private static async Task<string> OutcomeAsync(HttpClient client, string target)
    {
        HttpResponseMessage response;
        try
        {
            response = await client.GetAsync(target, HttpCompletionOption.ResponseHeadersRead);
        }
        catch (HttpRequestException)
        {
            return "no response";
        }

        using (response)
        {
            try
            {
                var body = await response.Content.ReadAsStringAsync();
                return $"{(int)response.StatusCode} {(response.StatusCode == HttpStatusCode.BadGateway ? "sidekick" : body)}";
            }
            catch (HttpRequestException)
            {
                return $"{(int)response.StatusCode} cut";
            }
            catch (IOException)
            {
                return $"{(int)response.StatusCode} cut";
            }
        }
    }
}
