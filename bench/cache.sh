#!/usr/bin/env bash
# The shared S3 cache (docs/cache.md), measured on loopback with its DEFAULT settings; writes bench/cache-results.md.
#
#   bash bench/cache.sh           # 3 runs of part 1, 10 x 32 MiB objects in part 2 (~10 minutes)
#   bash bench/cache.sh --quick   # 1 run of part 1, 4 x 16 MiB objects in part 2
#
# Part 1, a fast origin and a client reading as fast as it can (curl -o /dev/null): for a 64 MiB and a 1 GiB
# object, the MISS (first GET through the caching sidekick) against the same GET through a sidekick without the
# cache, and the HIT (a GET once the fill's upload completed) against a GET of the stored object straight from the
# store with the same client. Median of RUNS_64 runs for 64 MiB (a tenth of a second per GET on a shared machine:
# three would leave the ratio to chance), of RUNS for 1 GiB. Then the bodies' SHA-256 against the origin's file, sidekick's peak
# RSS while a 1 GiB fill runs, and its spool directory once the fills are done.
#
# Part 2, a remote origin (50 ms before each request, 20 MB/s per connection, bench/slow-origin.py): five
# sidecars sharing the bucket read the same objects at the same time, with and without the cache; the bytes the
# origin served (its access log) and each sidecar's time.
#
# Store: s3rver (npm ci), a Node.js S3 server writing to local disk. Origin: nginx (files with ETag and
# Last-Modified, Cache-Control: max-age=3600). Everything shares this machine's cores, so the load average is
# recorded with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out/cache
RESULTS=$ROOT/bench/cache-results.md

RUNS=3; RUNS_64=11; SLOW_COUNT=10; SLOW_MIB=32
[ "${1:-}" = --quick ] && { RUNS=1; RUNS_64=1; SLOW_COUNT=4; SLOW_MIB=16; }
SIDECARS=5
# Every request through a sidekick names the same host, as clients of sidecars on different machines all
# calling localhost:8080 do: the cache key is Host + target (src/Sidekick/Caching/CacheKey.cs), so five
# sidecars on five ports of one machine would otherwise never share an entry.
HOST=data.bench

# --- Tools -------------------------------------------------------------------------------------------------
need=()
for tool in nginx curl python3; do command -v "$tool" >/dev/null || need+=("$tool"); done
command -v node >/dev/null || need+=(nodejs npm)
command -v ss >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -d node_modules/s3rver ] || npm ci --no-audit --no-fund --loglevel=error
echo "building sidekick (Native AOT)..."
dotnet publish src/Sidekick -c Release -r linux-x64 -o bench/out/sidekick -v quiet -nologo >/dev/null
SIDEKICK=$ROOT/bench/out/sidekick/sidekick

# --- Helpers -----------------------------------------------------------------------------------------------
# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 50 ms; fails the run after SECONDS.
wait_until() {
  local limit=$1 what=$2 start=$EPOCHREALTIME; shift 2
  until "$@"; do
    if awk -v s="$start" -v n="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(n - s > l) }'; then
      echo "timed out after ${limit}s waiting for $what" >&2; return 1
    fi
    sleep 0.05
  done
}
elapsed() { awk -v s="$1" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.2f", n - s }'; }
# metric PORT NAME: the sum of every series of NAME in that sidekick's metrics (labels summed).
metric() {
  curl -s "http://127.0.0.1:$1/.prometheus/metrics" |
    awk -v m="$2" 'index($1, m) == 1 && (length($1) == length(m) || substr($1, length(m) + 1, 1) == "{") { s += $2 } END { printf "%d\n", s }'
}
# kept_none PORT: no spool file is kept for reuse any more (they are kept 30 s after their fill, docs/cache.md).
kept_none() { [ "$(metric "$1" sidekick_cache_spool_kept_bytes)" = 0 ]; }
# median VALUES...: the middle value (the lower middle one for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# fetch URL [CURL ARGS...]: one GET read at full speed into /dev/null; prints "seconds status x-cache bytes".
fetch() {
  local url=$1; shift
  curl -s -o /dev/null "$@" -w '%{time_total} %{http_code} %header{x-cache} %{size_download}\n' "$url" |
    awk '{ if (NF == 3) { $4 = $3; $3 = "-" } print }'
}
# expect WHAT ACTUAL WANTED: stops the run when a response is not what the measurement assumes.
expect() { [ "$2" = "$3" ] || { echo "$1: got '$2', expected '$3'" >&2; exit 1; }; }
rss_kib() { local key value rest; while read -r key value rest; do [ "$key" = VmRSS: ] && { echo "$value"; return; }; done < "/proc/$1/status"; }
hwm_kib() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }
# key_of TARGET: the bucket object holding the entry for http://$HOST TARGET through the caching sidekick: its
# namespace folder ($NAMESPACE, read from its /v1/state), then the SHA-256 hex of host + target (CacheKey.For; one
# query parameter at most here, so no sorting is needed).
key_of() { printf '%s/%s' "$NAMESPACE" "$(printf '%s%s' "$HOST" "$1" | sha256sum | cut -d' ' -f1)"; }
load() { uptime | sed 's/.*load average: //'; }

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$OUT/origin.pid" ] && kill "$(cat "$OUT/origin.pid")" 2>/dev/null || true
  # Gone before the script ends, so that a run straight after finds its ports free.
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# --- Origin, store, sidekicks --------------------------------------------------------------------------------
ORIGIN=18291        # nginx, full speed
ORIGIN_SLOW=18292   # nginx again, behind slow-origin.py (its own access log)
SLOW=18293          # slow-origin.py
SK_PLAIN=18300      # sidekick, no cache, in front of ORIGIN
SK_CACHE=18301      # sidekick with the cache, in front of ORIGIN
SC_BASE=18310       # 18311..18315: sidecars with the cache in front of SLOW
SP_BASE=18320       # 18321..18325: sidecars without the cache in front of SLOW

for port in $ORIGIN $ORIGIN_SLOW $SLOW $SK_PLAIN $SK_CACHE $(seq $((SC_BASE + 1)) $((SC_BASE + SIDECARS))) $(seq $((SP_BASE + 1)) $((SP_BASE + SIDECARS))); do
  ! ss -Hltn "sport = :$port" | grep -q . || { echo "port $port is in use: stop what listens there first" >&2; exit 1; }
done
rm -rf "$OUT"; mkdir -p "$OUT/www/slow"; chmod 755 "$ROOT/bench/out" "$OUT" "$OUT/www" "$OUT/www/slow"
echo "writing the objects..."
head -c $((64 << 20)) /dev/urandom > "$OUT/www/obj64"
head -c $((1 << 30)) /dev/urandom > "$OUT/www/obj1g"
for i in $(seq -w 1 "$SLOW_COUNT"); do head -c $((SLOW_MIB << 20)) /dev/urandom > "$OUT/www/slow/s$i"; done
echo ok > "$OUT/www/health"; chmod 644 "$OUT/www"/* "$OUT/www/slow"/*; chmod 755 "$OUT/www/slow"

# nginx sends ETag and Last-Modified for static files by default; the explicit freshness makes them cacheable
# for an hour. The slow server's log records the body bytes of every response: the origin's traffic.
cat > "$OUT/origin.conf" <<CONF
worker_processes 1; pid $OUT/origin.pid; error_log $OUT/origin.err; daemon on;
events { worker_connections 1024; }
http {
  log_format bytes '\$body_bytes_sent \$uri \$status';
  sendfile on; keepalive_requests 100000;
  server { listen 127.0.0.1:$ORIGIN; access_log off; root $OUT/www; add_header Cache-Control "max-age=3600"; }
  server { listen 127.0.0.1:$ORIGIN_SLOW; access_log $OUT/slow-access.log bytes; root $OUT/www; add_header Cache-Control "max-age=3600"; }
}
CONF
nginx -c "$OUT/origin.conf" -p "$OUT"

python3 bench/slow-origin.py $SLOW $ORIGIN_SLOW --rate 20000000 --delay 0.05 > "$OUT/slow-origin.log" 2>&1 &
PIDS+=($!)

mkdir -p "$OUT/s3data"
node node_modules/s3rver/bin/s3rver.js -d "$OUT/s3data" -a 127.0.0.1 -p 0 --silent --configure-bucket cache > "$OUT/s3rver.log" 2>&1 &
S3_PID=$!; PIDS+=($S3_PID)
wait_until 30 "s3rver" grep -q listening "$OUT/s3rver.log"
S3=http://127.0.0.1:$(grep -o '127.0.0.1:[0-9]*' "$OUT/s3rver.log" | cut -d: -f2)
wait_until 10 "slow-origin.py" grep -q listening "$OUT/slow-origin.log"

# start_sidekick NAME PORT BACKEND_PORT cache|nocache: the cache with its defaults, but for the spool directory
# (under bench/out so the script can check it is empty afterwards). Its output, bench/out/cache/NAME.log, has
# the cache store's state changes (--log) and one trace line per request with its X-Cache. Sets LAST_PID.
start_sidekick() {
  local name=$1 port=$2 backend=$3 mode=$4
  if [ "$mode" = cache ]; then
    mkdir -p "$OUT/spool-$name"
    SIDEKICK_CACHE_ENDPOINT=$S3 SIDEKICK_CACHE_ACCESS_KEY=S3RVER SIDEKICK_CACHE_SECRET_KEY=S3RVER SIDEKICK_CACHE_BUCKET=cache \
    SIDEKICK_CACHE_SPOOL_DIR=$OUT/spool-$name \
      "$SIDEKICK" --address 127.0.0.1:$port --health-path=/health --log http://127.0.0.1:$backend > "$OUT/$name.log" 2>&1 &
  else
    "$SIDEKICK" --address 127.0.0.1:$port --health-path=/health --log http://127.0.0.1:$backend > "$OUT/$name.log" 2>&1 &
  fi
  LAST_PID=$!; PIDS+=($LAST_PID)
}
up() { curl -sf -o /dev/null "http://127.0.0.1:$1/v1/health"; }
# The store counts as online only after the first good probe (CacheHealth): measure after it.
store_up() { [ "$(metric "$1" sidekick_cache_store_up)" = 1 ]; }

start_sidekick plain $SK_PLAIN $ORIGIN nocache; PLAIN_PID=$LAST_PID
start_sidekick cache $SK_CACHE $ORIGIN cache; CACHE_PID=$LAST_PID
for i in $(seq 1 $SIDECARS); do
  start_sidekick "sc$i" $((SC_BASE + i)) $SLOW cache
  start_sidekick "sp$i" $((SP_BASE + i)) $SLOW nocache
done
for port in $SK_PLAIN $SK_CACHE $(seq $((SC_BASE + 1)) $((SC_BASE + SIDECARS))) $(seq $((SP_BASE + 1)) $((SP_BASE + SIDECARS))); do
  wait_until 30 "sidekick on $port" up "$port"
done
for port in $SK_CACHE $(seq $((SC_BASE + 1)) $((SC_BASE + SIDECARS))); do wait_until 30 "the store online in $port" store_up "$port"; done
NAMESPACE=$(curl -s "http://127.0.0.1:$SK_CACHE/v1/state" | python3 -c 'import json, sys; print(json.load(sys.stdin)["cache"]["namespace"])')

# fill_done PORT COMPLETED: the sidekick completed more than COMPLETED fills, none runs, and no spool space is held.
fill_done() {
  [ "$(metric "$1" sidekick_cache_fills_completed_total)" -gt "$2" ] &&
    [ "$(metric "$1" sidekick_cache_fills_in_flight)" = 0 ] && [ "$(metric "$1" sidekick_cache_spool_bytes)" = 0 ]
}
# no_abandoned PORT: stops the run if a fill was given up (its reason is in the metrics and the log).
no_abandoned() {
  local n; n=$(metric "$1" sidekick_cache_fills_abandoned_total)
  [ "$n" = 0 ] || { echo "a fill was abandoned on $1:" >&2; curl -s "http://127.0.0.1:$1/.prometheus/metrics" | grep abandoned >&2; tail "$OUT"/*.log >&2; exit 1; }
}

LOAD_START=$(load)

# --- Part 1: full speed ------------------------------------------------------------------------------------------
# Wall time alone says little on a shared machine: the CPU time each process spent on a GET is recorded with it
# (utime + stime from /proc), so a slower figure can be told apart as more work or less CPU given.
NGINX_WORKER=$(pgrep -P "$(cat "$OUT/origin.pid")" | head -1)
TICK=$(getconf CLK_TCK)
ticks() { local total=0 pid f; for pid in "$@"; do read -ra f < "/proc/$pid/stat"; total=$((total + f[13] + f[14])); done; echo $total; }
# cpu_mark: CPU ticks so far of the two sidekicks, s3rver and nginx's worker.
cpu_mark() { echo "$(ticks "$PLAIN_PID" "$CACHE_PID") $(ticks "$S3_PID") $(ticks "$NGINX_WORKER")"; }
# store_idle: s3rver spent under 2 clock ticks of CPU over the last 300 ms.
store_idle() { local before; before=$(ticks "$S3_PID"); sleep 0.3; [ $(($(ticks "$S3_PID") - before)) -lt 2 ]; }
declare -A T C        # T[object,path]: seconds of each run; C[object,path,process]: CPU seconds of each run
# record OBJECT PATH SECONDS MARK: appends one run's wall time and the CPU seconds spent since MARK.
record() {
  local obj=$1 path=$2 seconds=$3 sk0 s30 ng0 sk1 s31 ng1
  read -r sk0 s30 ng0 <<< "$4"; read -r sk1 s31 ng1 <<< "$(cpu_mark)"
  T[$obj,$path]+="$seconds "
  C[$obj,$path,sidekick]+="$(awk -v d=$((sk1 - sk0)) -v t="$TICK" 'BEGIN { printf "%.2f", d / t }') "
  C[$obj,$path,s3rver]+="$(awk -v d=$((s31 - s30)) -v t="$TICK" 'BEGIN { printf "%.2f", d / t }') "
  C[$obj,$path,nginx]+="$(awk -v d=$((ng1 - ng0)) -v t="$TICK" 'BEGIN { printf "%.2f", d / t }') "
}
# measure OBJECT PATH URL [CURL ARGS...]: one timed GET, recorded; leaves CODE, CACHE and SIZE.
measure() {
  local obj=$1 path=$2 url=$3 mark seconds; shift 3
  # Every timed GET starts with no dirty pages to write back: s3rver stores the last upload on this machine's
  # own disk (a store is remote in use), and its writeback of up to 1 GiB would otherwise land on whichever GET
  # comes next, on the disk the spool writes to.
  sync
  # Nor with the store still at work on what came before (finishing an upload, its own garbage collection): the
  # first GET after a fill met that, whichever path it was (1 GiB: 2.5 s against 1.7-1.9 s for the GET after it).
  wait_until 60 "the store idle" store_idle
  mark=$(cpu_mark)
  read -r seconds CODE CACHE SIZE <<< "$(fetch "$url" "$@")"
  record "$obj" "$path" "$seconds" "$mark"
}
# The timed GETs of one run ($obj, $target and $length set by the loop below).
measure_plain() { measure $obj plain "http://127.0.0.1:$SK_PLAIN$target" -H "Host: $HOST"; expect "uncached $obj" "$CODE $SIZE" "200 $length"; }
measure_hit() { measure $obj hit "http://127.0.0.1:$SK_CACHE$target" -H "Host: $HOST"; expect "HIT $obj" "$CODE $CACHE $SIZE" "200 HIT $length"; }
measure_store() { measure $obj store "$S3/cache/$(key_of "$target")"; expect "store GET $obj" "$CODE $SIZE" "200 $length"; }
measure_hit_range() {
  measure $obj hitrange "http://127.0.0.1:$SK_CACHE$target" -H "Host: $HOST" -H "Range: bytes=0-"
  expect "ranged HIT $obj" "$CODE $CACHE $SIZE" "206 HIT $length"
}
measure_store_range() { measure $obj storerange "$S3/cache/$(key_of "$target")" -H "Range: bytes=0-"; expect "ranged store GET $obj" "$CODE $SIZE" "206 $length"; }
RSS_PEAK=0            # KiB, sampled every 50 ms during the 1 GiB fills
RSS_BEFORE=$(rss_kib "$CACHE_PID")
for run in $(seq 1 "$RUNS_64"); do
  for obj in obj64 obj1g; do
    [ $obj = obj1g ] && [ "$run" -gt "$RUNS" ] && continue
    echo "part 1: run $run, $obj"
    length=$(stat -c %s "$OUT/www/$obj")
    target="/$obj?run=$run"   # a new query each run: a new cache entry, the same file
    # Paths compared with each other take turns at going first (odd runs one way, even runs the other), so that
    # neither always meets what the one before left behind (the store's work after an upload, cold caches).
    first=$((run % 2))
    measure $obj origin "http://127.0.0.1:$ORIGIN/$obj"; expect "origin $obj" "$CODE $SIZE" "200 $length"
    [ $first = 1 ] && measure_plain

    completed=$(metric $SK_CACHE sidekick_cache_fills_completed_total)
    if [ $obj = obj1g ]; then
      (while :; do rss_kib "$CACHE_PID"; sleep 0.05; done) > "$OUT/rss-$run.txt" & SAMPLER=$!
    fi
    started=$EPOCHREALTIME; fill_mark=$(cpu_mark)
    measure $obj miss "http://127.0.0.1:$SK_CACHE$target" -H "Host: $HOST"; expect "MISS $obj" "$CODE $CACHE $SIZE" "200 MISS $length"
    # The HIT must come from the store, not from the fill's spool (which also answers HIT): wait for the upload.
    wait_until 900 "the fill of $target" fill_done $SK_CACHE "$completed"
    record $obj stored "$(elapsed "$started")" "$fill_mark"
    if [ $obj = obj1g ]; then
      kill $SAMPLER; wait $SAMPLER 2>/dev/null || true
      peak=$(sort -n "$OUT/rss-$run.txt" | tail -1); [ "$peak" -gt "$RSS_PEAK" ] && RSS_PEAK=$peak
    fi
    no_abandoned $SK_CACHE
    # After the fill's upload: the uncached GET does not share the machine with it.
    [ $first = 0 ] && measure_plain

    if [ $first = 1 ]; then measure_hit; measure_store; else measure_store; measure_hit; fi
    # Diagnostic, not a setting: the same two GETs as "Range: bytes=0-" (the whole body, as a 206). The AWS SDK
    # checks a GetObject's body against an ETag that looks like an MD5 (s3rver gives one even to multipart
    # objects; S3 and MinIO do not) unless a range was asked; these rows show what that check costs a HIT.
    if [ $first = 1 ]; then measure_hit_range; measure_store_range; else measure_store_range; measure_hit_range; fi
  done
done
LOAD_PART1=$(load)
RSS_HWM=$(hwm_kib "$CACHE_PID")

# The bodies, once more (not timed: sha256sum would pace the client): MISS, HIT and the stored object must all be
# the origin's bytes.
declare -A SUM
for obj in obj64 obj1g; do
  echo "part 1: checksums of $obj"
  target="/$obj?run=verify"
  SUM[$obj,origin]=$(sha256sum < "$OUT/www/$obj" | cut -c1-64)
  completed=$(metric $SK_CACHE sidekick_cache_fills_completed_total)
  SUM[$obj,miss]=$(curl -s -H "Host: $HOST" "http://127.0.0.1:$SK_CACHE$target" | sha256sum | cut -c1-64)
  wait_until 900 "the fill of $target" fill_done $SK_CACHE "$completed"
  SUM[$obj,hit]=$(curl -s -D "$OUT/hit-headers" -H "Host: $HOST" "http://127.0.0.1:$SK_CACHE$target" | sha256sum | cut -c1-64)
  expect "verify HIT $obj" "$(grep -i '^x-cache:' "$OUT/hit-headers" | tr -d '\r' | cut -d' ' -f2)" HIT
  SUM[$obj,store]=$(curl -s "$S3/cache/$(key_of "$target")" | sha256sum | cut -c1-64)
done
no_abandoned $SK_CACHE
# The bucket's listing holds each key computed above, with the object's length.
LISTING=$(curl -s "$S3/cache?list-type=2")
LISTED_OK=yes
for obj in obj64 obj1g; do
  grep -q "<Key>$(key_of "/$obj?run=verify")</Key><LastModified>[^<]*</LastModified><ETag>[^<]*</ETag><Size>$(stat -c %s "$OUT/www/$obj")</Size>" <<< "$LISTING" || LISTED_OK=no
done
# A finished fill's spool file is kept 30 s for the next fill to overwrite (docs/cache.md); then it must be gone.
wait_until 120 "the kept spool files to be deleted" kept_none $SK_CACHE
SPOOL_LEFT=$(find "$OUT/spool-cache" -mindepth 1 | wc -l)

# --- Part 2: a slow remote origin, five sidecars -----------------------------------------------------------------
# slow_run LABEL PORT_BASE ORDER TAG: sidecar i reads every object once, in the ORDER given (same: s01, s02, ...
# for all; staggered: sidecar i starts at object 2i-1 and wraps), all five at once. Sets ROW (a table row) and
# FAILED (the responses that were not a whole 200, with the sidecar and object).
sum_metric() { local base=$1 name=$2 i total=0; for i in $(seq 1 $SIDECARS); do total=$((total + $(metric $((base + i)) "$name"))); done; echo $total; }
slow_run() {
  local label=$1 base=$2 order=$3 tag=$4 i j k mark times=() clients=() counts bytes requests fills0 errors0 stored0 waits0 failed
  echo "part 2: $label"
  mark=$(wc -l < "$OUT/slow-access.log")
  fills0=$(sum_metric "$base" sidekick_cache_fills_completed_total); errors0=$(sum_metric "$base" sidekick_cache_store_errors_total)
  stored0=$(( $(waits "$base" stored) + $(waits "$base" just_stored) )); waits0=$(sum_metric "$base" sidekick_cache_fill_waits_total)
  for i in $(seq 1 $SIDECARS); do
    (
      started=$EPOCHREALTIME
      for j in $(seq 0 $((SLOW_COUNT - 1))); do
        k=$j; [ "$order" = staggered ] && k=$(( (j + 2 * (i - 1)) % SLOW_COUNT ))
        object=s$(printf "%0${#SLOW_COUNT}d" $((k + 1)))
        # A failed response is recorded (curl's exit code last), not retried: the run goes on.
        curl -s -o /dev/null -H "Host: $HOST" -w "$object %{http_code} %header{x-cache} %{size_download} %{exitcode}\n" \
          "http://127.0.0.1:$((base + i))/slow/$object?run=$tag" || true
      done > "$OUT/part2-$tag-$i.txt"
      elapsed "$started" > "$OUT/part2-$tag-$i.time"
    ) &
    clients+=($!)
  done
  wait "${clients[@]}"
  for i in $(seq 1 $SIDECARS); do times+=("$(cat "$OUT/part2-$tag-$i.time")"); done
  counts=$(cat "$OUT"/part2-$tag-*.txt | awk '{ c[NF == 5 ? $3 : "none"]++ } END { for (k in c) { printf "%s%s %d", sep, k, c[k]; sep = ", " } }')
  FAILED=$(for i in $(seq 1 $SIDECARS); do
    awk -v n=$((SLOW_MIB << 20)) -v i="$i" '$2 != 200 || $(NF - 1) != n || $NF != 0 { printf "sidecar %d %s: status %s, X-Cache %s, %d bytes, curl exit %s; ", i, $1, $2, (NF == 5 ? $3 : "none"), $(NF - 1), $NF }' "$OUT/part2-$tag-$i.txt"
  done | sed 's/; $//')
  # The fills go on after the clients have their bodies: the next run starts once they are all stored.
  if [ "$base" = $SC_BASE ]; then
    for i in $(seq 1 $SIDECARS); do wait_until 900 "sidecar $i's fills" idle $((base + i)); done
  fi
  read -r bytes requests <<< "$(tail -n +$((mark + 1)) "$OUT/slow-access.log" | awk '$2 ~ /^\/slow\// { b += $1; n++ } END { printf "%d %d\n", b, n }')"
  local all=$((SIDECARS * SLOW_COUNT * (SLOW_MIB << 20)))
  failed=$(cat "$OUT"/part2-$tag-*.txt | awk -v n=$((SLOW_MIB << 20)) '$2 != 200 || $(NF - 1) != n || $NF != 0 { f++ } END { print f + 0 }')
  ROW="| $label | $requests | $(awk -v b="$bytes" 'BEGIN { printf "%.0f", b / 1048576 }') | $(awk -v b="$bytes" -v a="$all" 'BEGIN { printf "%.0f %%", 100 * b / a }') | $(median "${times[@]}") | $(printf '%s\n' "${times[@]}" | sort -g | head -1)-$(printf '%s\n' "${times[@]}" | sort -g | tail -1) | $counts | $failed | $(( $(sum_metric "$base" sidekick_cache_fills_completed_total) - fills0 )) | $(( $(sum_metric "$base" sidekick_cache_store_errors_total) - errors0 )) | $(( $(waits "$base" stored) + $(waits "$base" just_stored) - stored0 )) of $(( $(sum_metric "$base" sidekick_cache_fill_waits_total) - waits0 )) |"
}
idle() { [ "$(metric "$1" sidekick_cache_fills_in_flight)" = 0 ] && [ "$(metric "$1" sidekick_cache_spool_bytes)" = 0 ]; }
# waits PORT_BASE OUTCOME: misses that met another sidecar's fill (sidekick_cache_fill_waits_total), summed over the sidecars, by outcome.
waits() {
  local base=$1 outcome=$2 i total=0
  for i in $(seq 1 $SIDECARS); do
    total=$((total + $(curl -s "http://127.0.0.1:$((base + i))/.prometheus/metrics" | awk -v o="sidekick_cache_fill_waits_total{outcome=\"$outcome\"}" '$1 == o { print $2; f = 1 } END { if (!f) print 0 }')))
  done
  echo $total
}

slow_run "cache off" $SP_BASE same off; ROW_OFF=$ROW; FAILED_OFF=$FAILED; LOAD_OFF=$(load)
slow_run "cache on, same order (first pass)" $SC_BASE same same; ROW_SAME=$ROW; FAILED_SAME=$FAILED; LOAD_SAME=$(load)
slow_run "cache on, same order again (second pass)" $SC_BASE same same; ROW_AGAIN=$ROW; FAILED_AGAIN=$FAILED
slow_run "cache on, staggered order (first pass)" $SC_BASE staggered staggered; ROW_STAG=$ROW; FAILED_STAG=$FAILED; LOAD_STAG=$(load)
ABANDONED2=0; STORE_ERRORS=0; SPOOL_LEFT2=0
for i in $(seq 1 $SIDECARS); do
  ABANDONED2=$((ABANDONED2 + $(metric $((SC_BASE + i)) sidekick_cache_fills_abandoned_total)))
  STORE_ERRORS=$((STORE_ERRORS + $(metric $((SC_BASE + i)) sidekick_cache_store_errors_total)))
  wait_until 120 "sidecar $i's kept spool files to be deleted" kept_none $((SC_BASE + i))
  SPOOL_LEFT2=$((SPOOL_LEFT2 + $(find "$OUT/spool-sc$i" -mindepth 1 | wc -l)))
done
STORE_ERRORS1=$(metric $SK_CACHE sidekick_cache_store_errors_total)
LOAD_END=$(load)

# --- Report ------------------------------------------------------------------------------------------------------
# The figures are rewritten; a hand-written "## Reading" section at the end of the old file is kept as it was.
READING=$(sed -n '/^## Reading/,$p' "$RESULTS" 2>/dev/null || true)
secs() { awk -v s="$1" 'BEGIN { printf "%.3f", s }'; }
cell() { # cell OBJECT PATH: "median (each run)" of the wall seconds
  local values v list=(); read -ra values <<< "${T[$1,$2]}"
  for v in "${values[@]}"; do list+=("$(secs "$v")"); done
  if [ "${#values[@]}" -gt 1 ]; then printf '%s (%s)' "$(secs "$(median "${values[@]}")")" "$(printf '%s, ' "${list[@]}" | sed 's/, $//')"; else printf '%s' "${list[0]}"; fi
}
cpu() { median ${C[$1,$2,$3]}; }  # cpu OBJECT PATH PROCESS: median CPU seconds
mib_s() { awk -v s="$(median ${T[$1,$2]})" -v b="$(stat -c %s "$OUT/www/$1")" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t ? "met" : "**missed**") }'; }
size_name() { [ "$1" = obj64 ] && echo "64 MiB" || echo "1 GiB"; }
sums() { local o=$1; [ "${SUM[$o,miss]}" = "${SUM[$o,origin]}" ] && [ "${SUM[$o,hit]}" = "${SUM[$o,origin]}" ] && [ "${SUM[$o,store]}" = "${SUM[$o,origin]}" ] && echo "equal" || echo "**DIFFERENT**"; }
{
  echo "# Cache benchmark"
  echo
  echo "\`bash bench/cache.sh$([ "$RUNS" = 1 ] && echo ' --quick')\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)."
  echo
  echo "- Machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/Mem:/ { print $2 }') GiB RAM, $(uname -r); shared with other jobs."
  echo "- Load average (1, 5, 15 min): at the start $LOAD_START; after part 1 $LOAD_PART1; after part 2's runs: cache off $LOAD_OFF, same order $LOAD_SAME, staggered $LOAD_STAG; at the end $LOAD_END."
  echo "- $("$SIDEKICK" --version 2>&1 | head -1), Native AOT; store s3rver $(node -p 'require("./node_modules/s3rver/package.json").version') (Node.js $(node --version), local disk); origin nginx $(nginx -v 2>&1 | sed 's|.*/||'); client curl $(curl --version | head -1 | cut -d' ' -f2)."
  echo "- Cache settings: the defaults (1 MiB minimum, 5 MiB parts, 5 GiB spool: the larger of 4 GiB and the 5 GiB largest object, 64 fills, 60 s store probe), only SIDEKICK_CACHE_SPOOL_DIR set (to bench/out, so that it can be checked)."
  echo
  echo "## 1. One client at full speed (loopback, curl -o /dev/null)"
  echo
  echo "Each run asks for a new URL (\`?run=N\`, the same file), so its first GET through the caching sidekick is a real miss; the HIT is asked once that fill's upload has completed (polled in the metrics: a fill completed, none in flight, no spool held), so it is read from the store and not from the fill's spool. The paths compared take turns at going first: in odd runs the uncached GET comes before the MISS and the HIT before the store's GET, in even runs the uncached GET comes after the fill's upload and the store's GET before the HIT. Seconds per GET, median of $RUNS_64 runs for 64 MiB and $RUNS for 1 GiB."
  echo
  echo "| object | MISS | sidekick, no cache | MISS / no cache (target ≤ 1.1) | HIT | store direct | HIT / store direct (target ≤ 1.2) |"
  echo "|---|---|---|---|---|---|---|"
  for obj in obj64 obj1g; do
    miss_ratio=$(ratio "$(median ${T[$obj,miss]})" "$(median ${T[$obj,plain]})")
    hit_ratio=$(ratio "$(median ${T[$obj,hit]})" "$(median ${T[$obj,store]})")
    echo "| $(size_name $obj) | $(secs "$(median ${T[$obj,miss]})") | $(secs "$(median ${T[$obj,plain]})") | **${miss_ratio}x**, $(verdict "$miss_ratio" 1.1) | $(secs "$(median ${T[$obj,hit]})") | $(secs "$(median ${T[$obj,store]})") | **${hit_ratio}x**, $(verdict "$hit_ratio" 1.2) |"
  done
  echo
  echo "Diagnostic, not a setting (see the reading): the HIT and the store GET asked as \`Range: bytes=0-\` (the whole body as a 206), HIT / store direct: 64 MiB $(ratio "$(median ${T[obj64,hitrange]})" "$(median ${T[obj64,storerange]})")x, 1 GiB $(ratio "$(median ${T[obj1g,hitrange]})" "$(median ${T[obj1g,storerange]})")x."
  echo
  echo "Every path, with each run's seconds and the CPU seconds (user + system, median) the processes on the path spent meanwhile. \"Fill\" is from the MISS's first byte asked until its entry was in the store (the upload goes on after the client has its body; until then other sidecars miss too)."
  echo
  echo "| object | path | seconds, median (runs) | MiB/s | CPU s sidekick | CPU s s3rver | CPU s nginx |"
  echo "|---|---|---|---|---|---|---|"
  for obj in obj64 obj1g; do
    for path in origin plain miss stored hit store hitrange storerange; do
      case $path in
        origin) what="origin direct (nginx)";; plain) what="sidekick, no cache";; miss) what="MISS (the client's GET)";;
        stored) what="fill: MISS until stored";; hit) what="HIT";; store) what="store direct (s3rver GET)";;
        hitrange) what="HIT, Range: bytes=0- (diagnostic)";; storerange) what="store direct, Range: bytes=0- (diagnostic)";;
      esac
      echo "| $(size_name $obj) | $what | $(cell $obj $path) | $([ $path = stored ] && echo - || mib_s $obj $path) | $(cpu $obj $path sidekick) | $(cpu $obj $path s3rver) | $(cpu $obj $path nginx) |"
    done
  done
  echo
  echo "- SHA-256 of the MISS body, the HIT body and the stored object against the origin's file: 64 MiB $(sums obj64), 1 GiB $(sums obj1g) (${SUM[obj1g,origin]:0:16}…). The bucket lists each object under the key computed from CacheKey.For, at its full length: $LISTED_OK."
  echo "- sidekick's RSS (the caching one): $((RSS_BEFORE / 1024)) MiB before part 1, peak **$((RSS_PEAK / 1024)) MiB** sampled every 50 ms during the 1 GiB fills (from the MISS's start until the upload completed), VmHWM (the kernel's high-water mark over the whole part) $((RSS_HWM / 1024)) MiB."
  echo "- Spool directory after the fills (once the files kept for reuse had their 30 s): $SPOOL_LEFT entries$([ "$SPOOL_LEFT" = 0 ] && echo ' (empty)'). Fills abandoned: $(metric $SK_CACHE sidekick_cache_fills_abandoned_total); store errors: $STORE_ERRORS1."
  echo
  echo "## 2. A slow remote origin, $SIDECARS sidecars sharing the bucket"
  echo
  echo "The origin, through bench/slow-origin.py: 50 ms before each request is forwarded, each response body paced at 20 MB/s per connection. $SIDECARS sidekick processes (own port, own spool, the same s3rver bucket, default settings) each read the same $SLOW_COUNT objects of $SLOW_MIB MiB one after the other, all $SIDECARS at once; the clients send the same Host. Without a cache the origin serves $((SIDECARS * SLOW_COUNT)) objects, $((SIDECARS * SLOW_COUNT * SLOW_MIB)) MiB. \"Same order\": every sidecar reads s1, s2, … in step; \"staggered\": sidecar i starts at object 2i-1 and wraps around. Origin bytes from nginx's access log (body bytes of /slow/ responses)."
  echo
  echo "| run | origin requests | origin MiB | of no-cache traffic | client seconds per sidecar, median | min-max | X-Cache | failed responses | fills completed | store errors | misses that met another sidecar's fill (waited, or found it just stored): served from its entry, of all |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  echo "$ROW_OFF"; echo "$ROW_SAME"; echo "$ROW_AGAIN"; echo "$ROW_STAG"; echo
  for failed in "cache off:$FAILED_OFF" "same order:$FAILED_SAME" "second pass:$FAILED_AGAIN" "staggered:$FAILED_STAG"; do
    [ -z "${failed#*:}" ] || printf -- '- Failed in "%s": %s\n\n' "${failed%%:*}" "${failed#*:}"
  done
  echo "Fills abandoned across the $SIDECARS caching sidecars: $ABANDONED2; store errors: $STORE_ERRORS; spool entries left: $SPOOL_LEFT2."
  [ -z "$READING" ] || { echo; echo "$READING"; }
} > "$RESULTS"
cat "$RESULTS"
