#!/usr/bin/env bash
# Instructions and cache misses per proxied request, sidekick against HAProxy, counted by a CPU simulator.
# Usage: bench/instructions.sh      (~7 minutes; writes bench/instructions.md)
#
# Each proxy runs under valgrind's callgrind (user-space instructions, with a simulated 32 KiB L1 data cache
# and a 512 KiB last level standing in for one core's L2) against the bench's nginx backend. wrk drives it
# without pause; after a warm-up, instrumentation is switched on for a window and the backend's own request
# counter (nginx stub_status) says how many requests went through. Unlike the timings of run.sh, the counts
# do not depend on what else the host runs: a change to the request path shows here as a number that moves
# by itself. What they leave out is the kernel (system calls, about half of each proxy's CPU time) and
# real cache latencies. The simulator runs each proxy ~50x slower, so both are saturated by wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$PWD/bench/out/instructions
mkdir -p "$OUT"
source bench/backend.sh
install_missing wrk nginx haproxy valgrind clang openssl
write_backend
# The backend counts the requests it served: the proxies' own counters would have to be read through them.
STATUS=18180
sed -i "s|^http { |http { server { listen 127.0.0.1:$STATUS; location = /status { stub_status; } }\n  |" "$OUT/backend.conf"
PROXY=18188
WARM=${WARM:-8}
WINDOW=${WINDOW:-10}

cleanup() {
  [ -n "${VG_PID:-}" ] && kill "$VG_PID" 2>/dev/null || true
  stop_backend
}
trap cleanup EXIT
stop_backend
start_backend

echo "building sidekick (Native AOT, symbols kept for the profile)…"
rm -rf "$OUT/sidekick"
# A stripped build made before (run.sh's, or any default publish) leaves in obj/ its stripped binary, which publish
# reuses when no source changed (the profile then names no function), and its sidekick.dbg, which publish copies
# here and valgrind refuses beside another binary ("possibly corrupted debuginfo file"). Link afresh, drop the .dbg.
rm -rf src/Sidekick/obj/Release/net10.0/linux-x64/native
dotnet publish src/Sidekick -c Release -r linux-x64 -o "$OUT/sidekick" -p:StripSymbols=false -v quiet -nologo >/dev/null
rm -f "$OUT/sidekick/sidekick.dbg"
# valgrind reads function names from the symbol table; it cannot read the DWARF the AOT compiler writes.
strip --strip-debug "$OUT/sidekick/sidekick"

write_haproxy "$OUT/haproxy.cfg" "127.0.0.1:$PROXY"
write_haproxy "$OUT/haproxy-log.cfg" --log "127.0.0.1:$PROXY"

served() { curl -s "http://127.0.0.1:$STATUS/status" | awk 'NR == 3 { print $3 }'; }

RESULTS=$OUT/instructions.tsv
: > "$RESULTS"
# measure NAME CONNECTIONS COMMAND...: the proxy under callgrind, one window of load; appends a line to RESULTS.
measure() {
  local name=$1 connections=$2; shift 2
  rm -f "$OUT/$name".callgrind*
  valgrind --tool=callgrind --cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=524288,8,64 --instr-atstart=no \
    --callgrind-out-file="$OUT/$name.callgrind" "$@" >"$OUT/$name.log" 2>&1 &
  VG_PID=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PROXY/1k"; do sleep 0.5; done
  wrk -t2 -c"$connections" -d$((WARM + WINDOW + 4))s "http://127.0.0.1:$PROXY/1k" >/dev/null &
  local load=$!
  sleep "$WARM"
  local before after
  before=$(served)
  callgrind_control -i on "$VG_PID" >/dev/null
  sleep "$WINDOW"
  callgrind_control -i off "$VG_PID" >/dev/null
  after=$(served)
  callgrind_control -d "$VG_PID" >/dev/null
  wait "$load"
  kill "$VG_PID"; wait "$VG_PID" 2>/dev/null || true
  VG_PID=
  # One status request is counted between the two readings; health probes (a few per window) are left in.
  local requests=$((after - before - 1))
  local totals
  totals=$(grep -h '^totals:' "$OUT/$name.callgrind".* | awk '{ for (i = 2; i <= NF; i++) s[i] += $i } END { for (i = 2; i <= 10; i++) printf "%d ", s[i] }')
  echo -e "$name\t$connections\t$requests\t$totals" | tee -a "$RESULTS"
  callgrind_annotate --show=Ir --threshold=80 $(ls "$OUT/$name.callgrind".* | tail -1) 2>/dev/null > "$OUT/$name.functions.txt" || true
}

SIDEKICK=("$OUT/sidekick/sidekick" --address 127.0.0.1:$PROXY --health-path=/health --quiet "http://127.0.0.1:{$B1...$B2}")
HAPROXY=(haproxy -f "$OUT/haproxy.cfg" -db)
measure sidekick-32 32 "${SIDEKICK[@]}"
measure haproxy-32 32 "${HAPROXY[@]}"
measure sidekick-256 256 "${SIDEKICK[@]}"
measure haproxy-256 256 "${HAPROXY[@]}"
# Access logging, each proxy's own, to a file (the proxy's stdout is its .log here): what a logged request adds.
TRACED=("$OUT/sidekick/sidekick" --address 127.0.0.1:$PROXY --health-path=/health --trace all)
measure sidekick+json-32 32 "${TRACED[@]}" --json "http://127.0.0.1:{$B1...$B2}"
measure sidekick+text-32 32 "${TRACED[@]}" "http://127.0.0.1:{$B1...$B2}"
measure haproxy+log-32 32 haproxy -f "$OUT/haproxy-log.cfg" -db

python3 - "$RESULTS" > bench/instructions.md <<'PY'
import sys, datetime
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
data = {}
for name, connections, requests, totals in rows:
    ir, dr, dw, i1, d1r, d1w, lli, lldr, lldw = (int(x) for x in totals.split())
    n = int(requests)
    data[name] = (int(connections), n, ir / n, (d1r + d1w) / n, (lldr + lldw + lli) / n)
print("# Instructions and cache misses per proxied request\n")
print(f"Measured {datetime.date.today()} by `bench/instructions.sh`: each proxy under valgrind's callgrind (user space")
print("only, simulated caches: 32 KiB L1 data, 512 KiB last level as one core's L2), 1 KiB responses from the bench's")
print("nginx backend, requests counted by the backend over the window. The kernel's share (system calls, about half")
print("of each proxy's CPU time in run.sh) is not in these figures.\n")
print("| proxy | connections | requests in window | instructions per request | L1 data misses per request | L2 misses per request |")
print("|---|---|---|---|---|---|")
for name, (c, n, ir, l1, l2) in data.items():
    print(f"| {name.rsplit('-', 1)[0]} | {c} | {n:,} | {ir:,.0f} | {l1:,.0f} | {l2:,.0f} |")
for c in (32, 256):
    s, h = data.get(f"sidekick-{c}"), data.get(f"haproxy-{c}")
    if s and h:
        print(f"\nx {c}: sidekick runs {s[2] / h[2]:.1f}x HAProxy's instructions and {s[4] / h[4]:.1f}x its L2 misses per request.", end="")
logged = [(name, base) for name, base in (("sidekick+json-32", "sidekick-32"), ("sidekick+text-32", "sidekick-32"), ("haproxy+log-32", "haproxy-32")) if name in data and base in data]
if logged:
    print("\n\nAccess logging to a file (`--trace all --json`, `--trace all`, HAProxy's `option httplog`), x 32: what it adds per request.\n")
    print("| proxy | instructions per request | without logging | added |")
    print("|---|---|---|---|")
    for name, base in logged:
        print(f"| {name.rsplit('-', 1)[0]} | {data[name][2]:,.0f} | {data[base][2]:,.0f} | {data[name][2] - data[base][2]:+,.0f} |")
print("\n\nWhere sidekick's instructions go: `bench/out/instructions/sidekick-32.functions.txt` (per function, exclusive).")
PY
cat bench/instructions.md
