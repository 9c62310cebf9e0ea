#!/usr/bin/env bash
# Load benchmark on loopback: direct nginx vs HAProxy vs nginx proxy vs sidekick (Native AOT), same backend.
# Usage: bench/run.sh [--quick]    (quick: 5 s per measurement; full: 15 s)
# Writes bench/results.md and bench/results.svg. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
DURATION=15
[ "${1:-}" = "--quick" ] && DURATION=5
mkdir -p "$OUT"

need=()
for tool in wrk haproxy nginx clang; do command -v $tool >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=(); for t in "${need[@]}"; do case $t in clang) pkgs+=(clang lld zlib1g-dev);; *) pkgs+=("$t");; esac; done
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

echo "building sidekick (Native AOT)…"
dotnet publish src/Sidekick -c Release -r linux-x64 -o "$OUT/sidekick" -v quiet -nologo >/dev/null
SIDEKICK=$OUT/sidekick/sidekick

# Backend: nginx serving static files on two ports (so balancing is real).
WEB=$OUT/www; mkdir -p "$WEB"; chmod 755 "$OUT" "$WEB"
head -c 1024 /dev/urandom > "$WEB/1k"; head -c 65536 /dev/urandom > "$WEB/64k"; head -c 1048576 /dev/urandom > "$WEB/1m"
echo ok > "$WEB/health"; chmod 644 "$WEB"/*
B1=18181; B2=18182; HAP=18183; NGP=18184; SK=18185
cat > "$OUT/backend.conf" <<CONF
worker_processes 1; pid $OUT/backend.pid; error_log $OUT/backend.err; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; sendfile on;
  server { listen 127.0.0.1:$B1; listen 127.0.0.1:$B2; root $WEB; } }
CONF
cat > "$OUT/haproxy.cfg" <<CONF
global
  maxconn 4000
  nbthread 1
defaults
  mode http
  timeout connect 10s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HAP
  default_backend be
backend be
  balance leastconn
  option httpchk GET /health
  http-reuse always
  server b1 127.0.0.1:$B1 check inter 5s
  server b2 127.0.0.1:$B2 check inter 5s
CONF
cat > "$OUT/proxy.conf" <<CONF
worker_processes 1; pid $OUT/proxy.pid; error_log $OUT/proxy.err; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { least_conn; server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 256; }
  server { listen 127.0.0.1:$NGP;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; } } }
CONF

cleanup() {
  [ -f "$OUT/backend.pid" ] && kill "$(cat "$OUT/backend.pid")" 2>/dev/null || true
  [ -f "$OUT/proxy.pid" ] && kill "$(cat "$OUT/proxy.pid")" 2>/dev/null || true
  [ -n "${HAP_PID:-}" ] && kill "$HAP_PID" 2>/dev/null || true
  [ -n "${SK_PID:-}" ] && kill "$SK_PID" 2>/dev/null || true
}
trap cleanup EXIT

nginx -c "$OUT/backend.conf" -p "$OUT"
haproxy -f "$OUT/haproxy.cfg" -D -p "$OUT/haproxy.pid"; HAP_PID=$(cat "$OUT/haproxy.pid")
nginx -c "$OUT/proxy.conf" -p "$OUT"

# sidekick: startup to first proxied 200
start=$(date +%s%N)
DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1 "$SIDEKICK" --address 127.0.0.1:$SK --health-path=/health --trace "" --quiet \
  "http://127.0.0.1:{$B1...$B2}" >/dev/null 2>&1 &
SK_PID=$!
until curl -sf -o /dev/null "http://127.0.0.1:$SK/1k"; do sleep 0.002; done
STARTUP_MS=$(( ($(date +%s%N) - start) / 1000000 ))
sleep 1
SK_IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$SK_PID/status)
HAP_IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$HAP_PID/status)

pids_of() { # the proxy's processes (nginx: master + workers)
  case $1 in
    direct) echo "";;
    haproxy) echo "$HAP_PID";;
    nginx) echo "$(cat "$OUT/proxy.pid") $(pgrep -P "$(cat "$OUT/proxy.pid")" | tr '\n' ' ')";;
    sidekick) echo "$SK_PID";;
  esac
}
port_of() { case $1 in direct) echo $B1;; haproxy) echo $HAP;; nginx) echo $NGP;; sidekick) echo $SK;; esac; }
cpu_ticks() { local t=0; for p in $1; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }
rss_kb() { local t=0; for p in $1; do t=$((t + $(awk '/VmRSS/ {print $2}' /proc/$p/status))); done; echo $t; }

RESULTS=$OUT/results.tsv
echo -e "target\tsize\tconns\trps\tp50_ms\tp99_ms\tcpu_us_per_req\trss_mb" > "$RESULTS"
HZ=$(getconf CLK_TCK)
for size in 1k 64k 1m; do
  for conns in 32 256; do
    [ "$size" != 1k ] && [ "$conns" = 256 ] && continue
    for target in direct haproxy nginx sidekick; do
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

python3 bench/report.py "$RESULTS" "$STARTUP_MS" "$SK_IDLE_RSS" "$HAP_IDLE_RSS" "$(stat -c %s "$SIDEKICK")" "$DURATION"
echo "wrote bench/results.md and bench/results.svg"
