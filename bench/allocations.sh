#!/usr/bin/env bash
# Bytes the managed heap takes per proxied request, by workload, read from sidekick's own counters.
# Usage: bench/allocations.sh      (~2 minutes; writes bench/allocations.md)
#
# Each workload runs against the bench's nginx backend through the Native AOT binary started with --pprof:
# a warm-up, then GC.GetTotalAllocatedBytes and the gen0 collection count from /debug/gc before and after
# 10 s of load, divided by the requests wrk or h2load reports. What stays per request is what the request
# path could not pool (see docs/architecture.md, "What a request allocates").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$PWD/bench/out/allocations
mkdir -p "$OUT"
source bench/backend.sh
install_missing wrk h2load nginx clang openssl
write_backend
PLAIN=18187; TLS=18197; PPROF=18198; PPROF_TLS=18199

cleanup() {
  for pid in ${SK_PID:-} ${SKT_PID:-}; do kill "$pid" 2>/dev/null || true; done
  stop_backend
}
trap cleanup EXIT
stop_backend
start_backend

echo "building sidekick (Native AOT)…"
dotnet publish src/Sidekick -c Release -r linux-x64 -o "$OUT/sidekick" -v quiet -nologo >/dev/null
SIDEKICK=$OUT/sidekick/sidekick
"$SIDEKICK" --address 127.0.0.1:$PLAIN --health-path=/health --quiet --pprof 127.0.0.1:$PPROF \
  "http://127.0.0.1:{$B1...$B2}" >"$OUT/sidekick.log" 2>&1 &
SK_PID=$!
"$SIDEKICK" --address 127.0.0.1:$TLS --cert "$OUT/tls/cert.pem" --key "$OUT/tls/key.pem" --health-path=/health \
  --quiet --pprof 127.0.0.1:$PPROF_TLS "http://127.0.0.1:{$B1...$B2}" >"$OUT/sidekick-tls.log" 2>&1 &
SKT_PID=$!
until curl -sf -o /dev/null http://127.0.0.1:$PLAIN/1k && curl -skf -o /dev/null https://127.0.0.1:$TLS/1k; do sleep 0.2; done

# counters PORT: total bytes allocated and gen0 collections so far.
counters() { curl -s "http://127.0.0.1:$1/debug/gc" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["totalAllocatedBytes"], d["gen0Collections"])'; }

RESULTS=$OUT/allocations.tsv
: > "$RESULTS"
# measure NAME PPROF_PORT COMMAND...: runs the load twice (warm-up, measured); the command prints its output to stdout.
measure() {
  local name=$1 port=$2; shift 2
  "$@" 3 >/dev/null
  read -r bytes0 gen0_0 < <(counters "$port")
  "$@" 10 > "$OUT/load.txt"
  read -r bytes1 gen0_1 < <(counters "$port")
  local requests
  requests=$(grep -oP '^\s*\K[0-9]+(?= requests in)' "$OUT/load.txt" || grep -oP 'requests: \d+ total, \d+ started, \K\d+(?= done)' "$OUT/load.txt")
  echo -e "$name\t$requests\t$((bytes1 - bytes0))\t$((gen0_1 - gen0_0))" | tee -a "$RESULTS"
}
wrk_load() { wrk -t2 -c"$1" -d"$3"s "http://127.0.0.1:$PLAIN/$2"; }
h2_load() { h2load -c32 -m8 -D"$1" "https://127.0.0.1:$TLS/1k"; }

measure "1 KiB x 32" $PPROF wrk_load 32 1k
measure "1 KiB x 256" $PPROF wrk_load 256 1k
measure "64 KiB x 32" $PPROF wrk_load 32 64k
measure "1 MiB x 32" $PPROF wrk_load 32 1m
measure "1 KiB HTTP/2 (TLS, 32 x 8 streams)" $PPROF_TLS h2_load

python3 - "$RESULTS" > bench/allocations.md <<'PY'
import sys, datetime
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
print("# Managed allocations per proxied request\n")
print(f"Measured {datetime.date.today()} by `bench/allocations.sh` (Native AOT binary, 10 s per workload after a warm-up).\n")
print("| workload | requests | bytes allocated per request | gen0 collections per 10,000 requests |")
print("|---|---|---|---|")
for name, requests, allocated, gen0 in rows:
    n = int(requests)
    print(f"| {name} | {n:,} | {int(allocated) / n:,.0f} | {int(gen0) * 10000 / n:.1f} |")
PY
cat bench/allocations.md
