#!/usr/bin/env bash
# Load benchmark on loopback: direct nginx vs HAProxy vs nginx proxy vs sidekick (Native AOT), same backend.
# Usage: [ROUNDS=3] bench/run.sh [--quick]    (quick: 5 s per measurement; full: 15 s; figures are medians of ROUNDS)
# Writes bench/results.md and bench/results.svg. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
DURATION=15
[ "${1:-}" = "--quick" ] && DURATION=5
# Rounds of the whole matrix; each figure in results.md is the median of its rounds (this machine is shared).
ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"

source bench/backend.sh   # B1 B2 DIRECT_TLS and the functions below
install_missing wrk h2load haproxy nginx clang openssl
write_backend

echo "building sidekick (Native AOT)…"
dotnet publish src/Sidekick -c Release -r linux-x64 -o "$OUT/sidekick" -v quiet -nologo >/dev/null
SIDEKICK=$OUT/sidekick/sidekick

HAP=18183; NGP=18184; SK=18185; SKT=18186
# TLS listeners for HTTP/2 from the client side (h2load negotiates h2 with ALPN): same proxies, same backend.
HAP_TLS=18193; NGP_TLS=18194; SK_TLS=18195
cat "$OUT/tls/cert.pem" "$OUT/tls/key.pem" > "$OUT/haproxy.pem"
write_haproxy "$OUT/haproxy.cfg" "127.0.0.1:$HAP" "127.0.0.1:$HAP_TLS ssl crt $OUT/haproxy.pem alpn h2,http/1.1"
cat > "$OUT/proxy.conf" <<CONF
worker_processes 1; pid $OUT/proxy.pid; error_log $OUT/proxy.err; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { least_conn; server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 256; }
  server { listen 127.0.0.1:$NGP; listen 127.0.0.1:$NGP_TLS ssl http2;
    ssl_certificate $OUT/tls/cert.pem; ssl_certificate_key $OUT/tls/key.pem;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; } } }
CONF

cleanup() {
  stop_backend
  [ -f "$OUT/proxy.pid" ] && kill "$(cat "$OUT/proxy.pid")" 2>/dev/null || true
  [ -n "${HAP_PID:-}" ] && kill "$HAP_PID" 2>/dev/null || true
  for pid in ${SK_PID:-} ${SKT_PID:-} ${SKS_PID:-}; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

start_backend
haproxy -f "$OUT/haproxy.cfg" -D -p "$OUT/haproxy.pid"; HAP_PID=$(cat "$OUT/haproxy.pid")
nginx -c "$OUT/proxy.conf" -p "$OUT"

# sidekick: startup to first proxied 200, the median of five launches (one launch on a busy shared
# machine can take twice as long as the next). The client polls from before the launch, so its own start
# is not counted (a curl per attempt added 5-35 ms, depending on the host).
startups=()
for launch in 1 2 3 4 5; do
  python3 bench/first-response.py $SK /1k > "$OUT/first-200.txt" &
  POLLER=$!
  sleep 0.3
  start=$(date +%s%N)
  "$SIDEKICK" --address 127.0.0.1:$SK --health-path=/health --trace "" --quiet \
    "http://127.0.0.1:{$B1...$B2}" >/dev/null 2>&1 &
  SK_PID=$!
  wait $POLLER
  startups+=($(( ($(cat "$OUT/first-200.txt") - start) / 1000000 )))
  if [ $launch -lt 5 ]; then kill $SK_PID; wait $SK_PID 2>/dev/null || true; fi
done
STARTUP_MS="${startups[*]}"   # report.py takes the median
# The same with every request traced as JSON (to /dev/null): the cost of tracing (observability issue).
"$SIDEKICK" --address 127.0.0.1:$SKT --health-path=/health --trace all --json \
  "http://127.0.0.1:{$B1...$B2}" >/dev/null 2>&1 &
SKT_PID=$!
"$SIDEKICK" --address 127.0.0.1:$SK_TLS --cert "$OUT/tls/cert.pem" --key "$OUT/tls/key.pem" \
  --health-path=/health --trace "" --quiet "http://127.0.0.1:{$B1...$B2}" >/dev/null 2>&1 &
SKS_PID=$!
until curl -sf -o /dev/null "http://127.0.0.1:$SKT/1k" && curl -skf -o /dev/null "https://127.0.0.1:$SK_TLS/1k"; do sleep 0.05; done
sleep 1
SK_IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$SK_PID/status)
HAP_IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$HAP_PID/status)

pids_of() { # the proxy's processes (nginx: master + workers)
  case $1 in
    direct) echo "";;
    haproxy) echo "$HAP_PID";;
    nginx) echo "$(cat "$OUT/proxy.pid") $(pgrep -P "$(cat "$OUT/proxy.pid")" | tr '\n' ' ')";;
    sidekick) echo "$SK_PID";;
    sidekick+trace) echo "$SKT_PID";;
    sidekick-tls) echo "$SKS_PID";;
  esac
}
port_of() { case $1 in direct) echo $B1;; haproxy) echo $HAP;; nginx) echo $NGP;; sidekick) echo $SK;; sidekick+trace) echo $SKT;; esac; }
tls_port_of() { case $1 in direct) echo $DIRECT_TLS;; haproxy) echo $HAP_TLS;; nginx) echo $NGP_TLS;; sidekick) echo $SK_TLS;; esac; }
cpu_ticks() { local t=0; for p in $1; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }
rss_kb() { local t=0; for p in $1; do t=$((t + $(awk '/VmRSS/ {print $2}' /proc/$p/status))); done; echo $t; }

RESULTS=$OUT/results.tsv
echo -e "target\tsize\tconns\trps\tp50_ms\tp99_ms\tcpu_us_per_req\trss_mb" > "$RESULTS"
HZ=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
for size in 1k 64k 1m; do
  for conns in 32 256; do
    [ "$size" != 1k ] && [ "$conns" = 256 ] && continue
    for target in direct haproxy nginx sidekick sidekick+trace; do
      pids=$(pids_of $target); port=$(port_of $target)
      wrk -t2 -c$conns -d1s "http://127.0.0.1:$port/$size" >/dev/null 2>&1 || true   # warm-up
      before=$( [ -n "$pids" ] && cpu_ticks "$pids" || echo 0 )
      wrk -t2 -c$conns -d${DURATION}s --latency "http://127.0.0.1:$port/$size" > "$OUT/wrk.txt" 2>&1 &
      WRK=$!; sleep $((DURATION / 2)); rss=$( [ -n "$pids" ] && rss_kb "$pids" || echo 0 ); wait $WRK
      after=$( [ -n "$pids" ] && cpu_ticks "$pids" || echo 0 )
      python3 - "$OUT/wrk.txt" "$target" "$size" "$conns" "$((after - before))" "$HZ" "$rss" >> "$RESULTS" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
target, size, conns, ticks, hz, rss = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
def ms(label):
    m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % label, text)
    if not m: return float("nan")
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
requests = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
cpu = ticks / hz * 1e6 / requests if requests and ticks else 0
print(f"{target}\t{size}\t{conns}\t{rps:.0f}\t{ms('50'):.3f}\t{ms('99'):.3f}\t{cpu:.1f}\t{rss/1024:.1f}")
PY
      tail -1 "$RESULTS"
    done
  done
done
done

# HTTP/2 from the client side: h2load over TLS (ALPN h2), 32 connections x 8 concurrent streams, 1 KiB.
# Every proxy speaks HTTP/1.1 with keep-alive to the backend, as above. h2load reports the mean latency only.
for round in $(seq "$ROUNDS"); do
for target in direct haproxy nginx sidekick; do
  pids=$( [ $target = sidekick ] && echo "$SKS_PID" || pids_of $target ); port=$(tls_port_of $target)
  before=$( [ -n "$pids" ] && cpu_ticks "$pids" || echo 0 )
  h2load -t2 -c32 -m8 -D $DURATION --warm-up-time=1 "https://127.0.0.1:$port/1k" > "$OUT/h2load.txt" 2>&1 &
  H2=$!; sleep $((DURATION / 2 + 1)); rss=$( [ -n "$pids" ] && rss_kb "$pids" || echo 0 ); wait $H2
  after=$( [ -n "$pids" ] && cpu_ticks "$pids" || echo 0 )
  python3 - "$OUT/h2load.txt" "$target" "$((after - before))" "$HZ" "$rss" >> "$RESULTS" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
target, ticks, hz, rss = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def ms(v, u): return float(v) / 1000 if u == "us" else float(v) * 1000 if u == "s" else float(v)
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", text).group(1))
m = re.search(r"time for request:\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", text)
mean = ms(m.group(1), m.group(2)) if m else float("nan")
cpu = ticks / hz * 1e6 / done if done and ticks else 0
print(f"{target}\t1k h2\t32x8\t{rps:.0f}\t{mean:.3f}\tnan\t{cpu:.1f}\t{rss/1024:.1f}")
PY
  tail -1 "$RESULTS"
done
done

python3 bench/report.py "$RESULTS" "$STARTUP_MS" "$SK_IDLE_RSS" "$HAP_IDLE_RSS" "$(stat -c %s "$SIDEKICK")" "$DURATION"
echo "wrote bench/results.md and bench/results.svg"
