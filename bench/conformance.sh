#!/usr/bin/env bash
# HTTP cache conformance: runs Mark Nottingham's cache-tests (https://cache-tests.fyi) through sidekick (cache on,
# SIDEKICK_CACHE_MIN_SIZE=0, s3rver as the store, the suite's test server as the only backend) and through nginx
# configured as the suite's docker/nginx does, and prints the required tests passed by each (dependencies honoured,
# as cache-tests.fyi shows them; browser-only tests left out).
# Usage: [TARGETS="sidekick nginx"] bench/conformance.sh [-i TEST_ID] [SUITE_DIR]
#   SUITE_DIR: a checkout of github.com/http-tests/cache-tests (default: bench/out/conformance/cache-tests, filled from
#   the git repository CACHE_TESTS_GIT names when it is empty). -i runs one test through sidekick only and prints its exchange.
# Writes bench/out/conformance/{sidekick,nginx}.json and the failing required tests in {sidekick,nginx}-failures.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD; OUT=$ROOT/bench/out/conformance; mkdir -p "$OUT"
ONLY=""
if [ "${1:-}" = "-i" ]; then ONLY=$2; shift 2; fi
SUITE=${1:-$OUT/cache-tests}
if [ ! -f "$SUITE/package.json" ]; then
  [ -n "${CACHE_TESTS_GIT:-}" ] || { echo "conformance.sh: no suite in $SUITE; give a checkout of http-tests/cache-tests as SUITE_DIR, or its git repository as CACHE_TESTS_GIT" >&2; exit 2; }
  mkdir -p "$SUITE"; git -C "$CACHE_TESTS_GIT" archive HEAD | tar -x -C "$SUITE"
fi
[ -d "$SUITE/node_modules/undici" ] || (cd "$SUITE" && npm install --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
[ -d node_modules/s3rver ] || npm ci --no-audit --no-fund --loglevel=error
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
DLL=$ROOT/src/Sidekick/bin/Release/net10.0/sidekick.dll
[ -f "$DLL" ] || dotnet build src/Sidekick -c Release -v quiet -nologo >/dev/null

ORIGIN=18300; SK=18301; NG=18302
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$OUT/nginx.pid" ] && kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT

# The origin: the suite's test server (it serves its own files, so /index.html answers 200: the health path).
export npm_package_config_protocol=http npm_package_config_port=$ORIGIN npm_package_config_pidfile=$OUT/origin.pid
(cd "$SUITE" && exec node test-engine/server/server.mjs) > "$OUT/origin.log" 2>&1 &
PIDS+=($!)
rm -rf "$OUT/s3data"; mkdir -p "$OUT/s3data"
node node_modules/s3rver/bin/s3rver.js -d "$OUT/s3data" -a 127.0.0.1 -p 0 --silent --configure-bucket cache > "$OUT/s3rver.log" 2>&1 &
PIDS+=($!)
until grep -q listening "$OUT/s3rver.log"; do sleep 0.1; done
S3PORT=$(grep -o '127.0.0.1:[0-9]*' "$OUT/s3rver.log" | cut -d: -f2)
until curl -sf -o /dev/null http://127.0.0.1:$ORIGIN/index.html; do sleep 0.1; done

SIDEKICK_CACHE_ENDPOINT=http://127.0.0.1:$S3PORT SIDEKICK_CACHE_ACCESS_KEY=S3RVER SIDEKICK_CACHE_SECRET_KEY=S3RVER \
SIDEKICK_CACHE_BUCKET=cache SIDEKICK_CACHE_MIN_SIZE=0 \
  dotnet "$DLL" --address 127.0.0.1:$SK --health-path=/index.html --health-duration 1s --trace "" --quiet \
  http://127.0.0.1:$ORIGIN > "$OUT/sidekick.log" 2>&1 &
PIDS+=($!)

# nginx as the suite's docker/nginx/nginx.conf has it, in its own prefix.
mkdir -p "$OUT/nginx/cache" "$OUT/nginx/tmp"; rm -rf "$OUT/nginx/cache/"*
cat > "$OUT/nginx.conf" <<CONF
worker_processes 1; pid $OUT/nginx.pid; error_log $OUT/nginx/error.log; daemon on;
events { worker_connections 2048; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx/tmp; fastcgi_temp_path $OUT/nginx/tmp; uwsgi_temp_path $OUT/nginx/tmp; scgi_temp_path $OUT/nginx/tmp;
  proxy_cache_path $OUT/nginx/cache levels=1:2 keys_zone=my-cache:8m max_size=1000m inactive=600m;
  proxy_temp_path $OUT/nginx/tmp;
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN;
      proxy_cache my-cache;
      proxy_cache_revalidate on;
      proxy_http_version 1.1;
    }
  }
}
CONF
[ -n "$ONLY" ] || nginx -c "$OUT/nginx.conf" -p "$OUT/nginx"

until curl -sf -o /dev/null http://127.0.0.1:$SK/index.html; do sleep 0.1; done
sleep 2   # the store's first probe

cli() { (cd "$SUITE" && npm_config_base=$1 npm_config_id=${2:-} npm_package_config_id="" node --no-warnings test-engine/cli.mjs); }
if [ -n "$ONLY" ]; then cli http://127.0.0.1:$SK "$ONLY"; exit 0; fi

cat > "$OUT/score.mjs" <<'JS'
// node score.mjs SUITE_DIR results.json: "passed/required", then one line per failing required test
import fs from 'fs'
const dir = process.argv[2]
const { default: tests } = await import(dir + '/tests/index.mjs')
const { determineTestResult, resultTypes } = await import(dir + '/test-engine/lib/results.mjs')
const results = JSON.parse(fs.readFileSync(process.argv[3]))
let required = 0; let passed = 0; const failing = []
for (const suite of tests) {
  for (const test of suite.tests) {
    if ((test.kind || 'required') !== 'required' || test.browser_only) continue
    required++
    const r = determineTestResult(tests, test.id, results)
    if (r === resultTypes.pass) passed++
    else failing.push(`${r[2]} ${test.id} (${test.name}): ${JSON.stringify(results[test.id])}`)
  }
}
console.log(`${passed}/${required}`)
failing.forEach(f => console.log(f))
JS

for target in ${TARGETS:-sidekick nginx}; do
  port=$SK; [ $target = nginx ] && port=$NG
  cli http://127.0.0.1:$port > "$OUT/$target.json"
  if [ $target = sidekick ]; then  # the store's health and the cache's counters, to tell a bypassed run from a real one
    curl -s http://127.0.0.1:$SK/v1/state > "$OUT/sidekick-state.json"
    curl -s http://127.0.0.1:$SK/.prometheus/metrics | grep '^sidekick_cache' > "$OUT/sidekick-metrics.txt"
  fi
  node "$OUT/score.mjs" "$SUITE" "$OUT/$target.json" > "$OUT/$target-failures.txt"
  echo "$target: $(head -1 "$OUT/$target-failures.txt") required tests passed"
done
