#!/usr/bin/env bash
# The suite's chaos scenario (4 backends in 2 sites, 3 writers + 4 readers, backends killed and restarted),
# run longer and once through sidekick and once through HAProxy (retries 3, option redispatch, backup servers
# for the second site, 100 ms health checks). Usage: bench/chaos.sh [SECONDS]   (default 60; writes bench/chaos-results.md)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
command -v haproxy >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
dotnet build tests/Sidekick.Tests -c Release -v quiet -nologo >/dev/null
run() {
  SIDEKICK_CHAOS_SECONDS=$SECONDS_EACH SIDEKICK_CHAOS_AGAINST=$1 dotnet test tests/Sidekick.Tests -c Release --no-build \
    --filter "FullyQualifiedName~ChaosTests" --logger "console;verbosity=detailed" 2>&1 | grep -E "^\s*(sidekick|haproxy) \(" | sed 's/^ *//' || true
}
{
  echo "# Chaos: sidekick against HAProxy"
  echo
  echo "Same scenario for both, $SECONDS_EACH s each (tests/Sidekick.Tests/Integration/ChaosTests.cs): 4 Kestrel backends"
  echo "sharing one object store, in 2 sites (HAProxy: the second site as backup servers); 3 writers PUT new objects,"
  echo "4 readers GET acknowledged objects and compare SHA-256; a random node (or the whole first site) is killed for"
  echo "0.7 s every 1.6 s. HAProxy: \`retries 3\`, \`option redispatch\`, \`check inter 100ms fall 1 rise 1\`."
  echo
  echo '```'
  run sidekick
  run haproxy
  echo '```'
} > bench/chaos-results.md
cat bench/chaos-results.md
