#!/usr/bin/env bash
# A fill whose first client is slow, with a fast request waiting on it (docs/cache.md, "Read your own fill": the
# hand-off); writes bench/slow-client-results.md.
#
#   bash bench/slow-client.sh          # 3 runs, 256 MiB
#   bash bench/slow-client.sh --quick  # 1 run, 64 MiB
#
# Each run asks for a new URL of the same file: a first client reads it throttled to 20 MB/s (curl --limit-rate),
# and one second later a second client asks for the same URL and reads as fast as it can. Through the caching
# sidekick the second one reads the first one's fill; through a sidekick without the cache both go to the origin.
# Recorded: each client's seconds, the bytes the origin sent (nginx's access log), the fills handed off, and the
# SHA-256 of both bodies and of the stored entry against the file. Store: s3rver; origin: nginx; default settings.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out/slow-client
RESULTS=$ROOT/bench/slow-client-results.md
RUNS=3; MIB=256
[ "${1:-}" = --quick ] && { RUNS=1; MIB=64; }

need=()
for tool in nginx curl python3; do command -v "$tool" >/dev/null || need+=("$tool"); done
command -v node >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -d node_modules/s3rver ] || npm ci --no-audit --no-fund --loglevel=error
echo "building sidekick (Native AOT)..."
dotnet publish src/Sidekick -c Release -r linux-x64 -o bench/out/sidekick -v quiet -nologo >/dev/null
SIDEKICK=$ROOT/bench/out/sidekick/sidekick

rm -rf "$OUT"; mkdir -p "$OUT/www" "$OUT/s3data" "$OUT/spool"
chmod 755 "$ROOT/bench/out" "$OUT" "$OUT/www"
head -c $((MIB << 20)) /dev/urandom > "$OUT/www/object"; echo ok > "$OUT/www/health"; chmod 644 "$OUT/www/"*
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN_PORT=$(free_port); PLAIN_PORT=$(free_port); CACHE_PORT=$(free_port)
cat > "$OUT/origin.conf" <<CONF
worker_processes 1; pid $OUT/origin.pid; error_log $OUT/origin.err; daemon on;
events { worker_connections 1024; }
http { sendfile on; keepalive_requests 100000; log_format bytes '\$request_uri \$status \$body_bytes_sent';
  server { listen 127.0.0.1:$ORIGIN_PORT; access_log $OUT/origin.log bytes; root $OUT/www; add_header Cache-Control "max-age=3600"; } }
CONF
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$OUT/origin.pid" ] && kill "$(cat "$OUT/origin.pid")" 2>/dev/null || true; }
trap cleanup EXIT
nginx -c "$OUT/origin.conf" -p "$OUT"
node node_modules/s3rver/bin/s3rver.js -d "$OUT/s3data" -a 127.0.0.1 -p 0 --silent --configure-bucket cache > "$OUT/s3rver.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$OUT/s3rver.log" && break; sleep 0.1; done
S3=http://127.0.0.1:$(grep -o '127.0.0.1:[0-9]*' "$OUT/s3rver.log" | cut -d: -f2)
"$SIDEKICK" --address "127.0.0.1:$PLAIN_PORT" --health-path=/health "http://127.0.0.1:$ORIGIN_PORT" > "$OUT/plain.log" 2>&1 & PIDS+=($!)
SIDEKICK_CACHE_ENDPOINT=$S3 SIDEKICK_CACHE_ACCESS_KEY=S3RVER SIDEKICK_CACHE_SECRET_KEY=S3RVER SIDEKICK_CACHE_BUCKET=cache \
  SIDEKICK_CACHE_SPOOL_DIR=$OUT/spool "$SIDEKICK" --address "127.0.0.1:$CACHE_PORT" --health-path=/health --log \
  "http://127.0.0.1:$ORIGIN_PORT" > "$OUT/cache.log" 2>&1 & PIDS+=($!)
metric() { curl -s "http://127.0.0.1:$CACHE_PORT/.prometheus/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
for _ in $(seq 200); do [ "$(metric sidekick_cache_store_up)" = 1 ] && break; sleep 0.1; done
origin_bytes() { awk -v u="$1" 'index($1, u) == 1 { s += $3 } END { print s + 0 }' "$OUT/origin.log"; }
want=$(sha256sum < "$OUT/www/object" | cut -c1-64)

rows=()
for run in $(seq "$RUNS"); do
  for port in "$PLAIN_PORT" "$CACHE_PORT"; do
    url="/object?run=$run-$port"
    curl -s --limit-rate 20M -o "$OUT/slow.bin" -w '%{time_total}' "http://127.0.0.1:$port$url" > "$OUT/slow.time" &
    slow=$!
    sleep 1
    fast=$(curl -s -o "$OUT/fast.bin" -w '%{time_total} %header{x-cache}' "http://127.0.0.1:$port$url")
    wait "$slow"
    same=$( [ "$(sha256sum < "$OUT/slow.bin" | cut -c1-64)" = "$want" ] && [ "$(sha256sum < "$OUT/fast.bin" | cut -c1-64)" = "$want" ] && echo equal || echo DIFFERENT)
    if [ "$port" = "$CACHE_PORT" ]; then
      for _ in $(seq 600); do [ "$(metric sidekick_cache_fills_in_flight)" = 0 ] && break; sleep 0.1; done
      stored=$(curl -s -o - -w '' "http://127.0.0.1:$port$url" | sha256sum | cut -c1-64)
      [ "$stored" = "$want" ] || same="$same, stored DIFFERENT"
      path="cache on"
    else
      path="cache off"
    fi
    rows+=("| $run | $path | $(cat "$OUT/slow.time") | ${fast% *} | ${fast#* } | $(( $(origin_bytes "$url") >> 20 )) | $same |")
    echo "${rows[-1]}"
  done
done

{
  echo "# A slow first client and a fast request waiting on its fill"
  echo
  echo "\`bash bench/slow-client.sh\` on $(date -u '+%Y-%m-%d %H:%M') UTC, commit $(git rev-parse --short HEAD); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "A $MIB MiB object (nginx origin on loopback; s3rver store; default cache settings). The first client reads at 20 MB/s"
  echo "(\`curl --limit-rate 20M\`); one second later a second client asks for the same URL and reads at full speed. With the cache,"
  echo "the second one reads the first one's fill (\`X-Cache: HIT\`); without it both go to the origin. Origin MiB: body bytes"
  echo "nginx logged for that URL (both clients, and the hand-off's rest)."
  echo
  echo "| run | path | slow client s | fast client s | fast client X-Cache | origin MiB | bodies and entry vs the file (SHA-256) |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Fills handed off: $(metric sidekick_cache_fills_handed_off_total); fills completed: $(metric sidekick_cache_fills_completed_total); hand-off lines in the --log output: $(grep -c 'handed off from its client' "$OUT/cache.log" || true)."
} > "$RESULTS.new"
if [ -f "$RESULTS" ] && grep -q '^## Reading' "$RESULTS"; then
  { cat "$RESULTS.new"; echo; sed -n '/^## Reading/,$p' "$RESULTS"; } > "$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"
  rm "$RESULTS.new"
else
  mv "$RESULTS.new" "$RESULTS"
fi
echo "wrote $RESULTS"
