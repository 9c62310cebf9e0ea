using System.Text;

namespace Sidekick.Cli;

/// <summary>
/// The <c>--help</c> text, laid out like upstream's, generated from <see cref="Flags.All"/>, with the
/// environment variables (<see cref="EnvironmentHelp"/>) after the flags.
/// </summary>
internal static class HelpText
{
    public static string Render(string programName)
    {
        var rows = new List<(string Names, string Usage)>();
        foreach (var flag in Flags.All)
        {
            if (flag.Hidden)
            {
                continue;
            }

            var names = string.Join(", ", flag.Names.Select(n =>
                (n.Length == 1 ? "-" : "--") + n + (flag.Kind == FlagKind.Bool ? "" : " " + flag.Placeholder)));
            rows.Add((names, flag.Usage + (flag.DefaultText is null ? "" : $" (default: {flag.DefaultText})")));
        }

        var width = rows.Max(r => r.Names.Length) + 2;
        var text = new StringBuilder();
        text.Append("NAME:\n  ").Append(programName).Append(" - High-Performance sidecar load-balancer\n\n");
        text.Append("USAGE:\n  ").Append(programName).Append(" - [FLAGS] SITE1 [SITE2..]\n\n");
        text.Append("FLAGS:\n");
        foreach (var (names, usage) in rows)
        {
            text.Append("  ").Append(names.PadRight(width)).Append(usage).Append('\n');
        }

        text.Append("\nENVIRONMENT:\n");
        var variableWidth = EnvironmentHelp.Rows.Max(r => r.Name.Length) + 2;
        foreach (var (name, usage) in EnvironmentHelp.Rows)
        {
            text.Append("  ").Append(name.PadRight(variableWidth)).Append(usage).Append('\n');
        }

        text.Append('\n');

        text.Append("""
            SITE:
              Each SITE is a comma separated list of pools of that site: http://172.17.0.{2...5},http://172.17.0.{6...9}.
              {N...M} expands to every number from N to M (zero padded when N or M is, e.g. {01...16}; lowercase hex
              such as {a...f} works too). If all servers in SITE1 are down, then the traffic is routed to the next
              site - SITE2, and comes back as soon as a server of SITE1 is healthy again. Flags go before the SITEs.

            EXAMPLES:
              1. Load balance across 4 MinIO Servers (http://minio1:9000 to http://minio4:9000)
                 $ {0} --health-path=/minio/health/ready http://minio{1...4}:9000

              2. Load balance across 4 MinIO Servers (http://minio1:9000 to http://minio4:9000), listen on port 8000
                 $ {0} --health-path=/minio/health/ready --address :8000 http://minio{1...4}:9000

              3. Load balance across 4 MinIO Servers using HTTPS and disable TLS certificate validation
                 $ {0} --health-path=/minio/health/ready --insecure https://minio{1...4}:9000

              4. Two sites, each site having two pools, each pool having 4 servers:
                 $ {0} --health-path=/minio/health/ready http://site1-minio{1...4}:9000,http://site1-minio{5...8}:9000 \
                     http://site2-minio{1...4}:9000,http://site2-minio{5...8}:9000

              5. Two sites, each site having two pools, each pool having 4 servers. After failover, allow read requests to site2 even if it has just read quorum:
                 $ {0} --health-path=/minio/health/cluster --read-health-path=/minio/health/cluster/read  \
                     http://site1-minio{1...4}:9000,http://site1-minio{5...8}:9000 http://site2-minio{1...4}:9000,http://site2-minio{5...8}:9000

              6. Sidekick as TLS terminator:
                 $ {0} --cert public.crt --key private.key --health-path=/minio/health/cluster http://site1-minio{1...4}:9000

              7. Load balance with the least-connections algorithm:
                 $ {0} --host-balance=least --health-path=/minio/health/ready http://minio{1...4}:9000

            """.Replace("{0}", programName, StringComparison.Ordinal));
        return text.ToString();
    }
}
