#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need first: the Node packages (s3rver, the real S3
# server the cache tests use; @20minutes/s3rver and the Node 24 it needs, an S3 server that verifies SigV4)
# and, where missing and possible, Debian tools the tests drive (curl, openssl, tmux, promtool, the AWS CLI,
# rclone and s3cmd).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v tmux >/dev/null || need+=(tmux)
command -v promtool >/dev/null || need+=(prometheus)
command -v aws >/dev/null || need+=(awscli)
command -v rclone >/dev/null || need+=(rclone)
command -v s3cmd >/dev/null || need+=(s3cmd)
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

# Each run's output is kept so that, when a test fails, its name and message are printed again at the very
# end: a CI log is often read from its tail, and the first run alone prints hundreds of lines.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
suite() { # NAME, then the dotnet test command; runs every suite even after a failure
  local name=$1
  shift
  if ! "$@" 2>&1 | tee "$logs/$name.log"; then
    failed+=("$name")
  fi
}

suite all dotnet test sidekick.slnx -c Release --logger "console;verbosity=normal" "$@"

# The forwarding suites once more with every request through YARP: the HTTP/1.1 fast path and YARP must
# behave the same (Http1PathTests pin the fast path themselves and are not repeated).
echo "== forwarding and cache suites again, through YARP only (SIDEKICK_FORWARDER=yarp) =="
SIDEKICK_FORWARDER=yarp suite yarp dotnet test sidekick.slnx -c Release --no-build --logger "console;verbosity=minimal" \
  --filter "(FullyQualifiedName~Sidekick.Tests.Integration.|FullyQualifiedName~Sidekick.Tests.Caching.)&FullyQualifiedName!~Http1PathTests"

# The forwarding suite once more on the .NET socket engine (SIDEKICK_IO=dotnet), the operator's fallback
# from sidekick's own event loops, which carry the runs above.
echo "== forwarding suite again, on the .NET socket engine (SIDEKICK_IO=dotnet) =="
SIDEKICK_IO=dotnet suite dotnet-engine dotnet test sidekick.slnx -c Release --no-build --logger "console;verbosity=minimal" \
  --filter "FullyQualifiedName~Sidekick.Tests.Integration."

if [ ${#failed[@]} -gt 0 ]; then
  for name in "${failed[@]}"; do
    echo "== failed in the '$name' run =="
    # A failure's block runs from its "Failed" line to the next test's result line.
    awk '/^ *Failed [A-Za-z]/ { on = 1; n = 0 }
         /^ *(Passed|Skipped) [A-Za-z]/ { on = 0 }
         on && n++ < 80' "$logs/$name.log"
    grep -E '^ *(Total tests|Passed|Failed|Skipped):| error [A-Z]+[0-9]+:' "$logs/$name.log" | tail -8
  done
  exit 1
fi
