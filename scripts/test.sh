#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need first: the Node packages (s3rver, the real S3
# server the cache tests use) and, where missing and possible, Debian tools the tests drive (curl, openssl,
# tmux, promtool).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v tmux >/dev/null || need+=(tmux)
command -v promtool >/dev/null || need+=(prometheus)
command -v node >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]}; tests that need them will say so" >&2
  fi
fi

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

dotnet test sidekick.slnx -c Release --logger "console;verbosity=normal" "$@"

# The forwarding suites once more with every request through YARP: the HTTP/1.1 fast path and YARP must
# behave the same (Http1PathTests pin the fast path themselves and are not repeated).
echo "== forwarding and cache suites again, through YARP only (SIDEKICK_FORWARDER=yarp) =="
SIDEKICK_FORWARDER=yarp dotnet test sidekick.slnx -c Release --no-build --logger "console;verbosity=minimal" \
  --filter "(FullyQualifiedName~Sidekick.Tests.Integration.|FullyQualifiedName~Sidekick.Tests.Caching.)&FullyQualifiedName!~Http1PathTests"

# The forwarding suite once more on the .NET socket engine (SIDEKICK_IO=dotnet), the operator's fallback
# from sidekick's own event loops, which carry the runs above.
echo "== forwarding suite again, on the .NET socket engine (SIDEKICK_IO=dotnet) =="
SIDEKICK_IO=dotnet dotnet test sidekick.slnx -c Release --no-build --logger "console;verbosity=minimal" \
  --filter "FullyQualifiedName~Sidekick.Tests.Integration."
