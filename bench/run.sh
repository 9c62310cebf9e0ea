#!/usr/bin/env bash
# Load benchmark on loopback: direct nginx vs HAProxy (default threads and nbthread 1) vs nginx proxy vs
# sidekick (Native AOT), same backend, with two backends and with one; plus HTTPS, HTTP/2 and access logging.
# Usage: [ROUNDS=3] [DURATION=15] [BACKENDS="2 1"] bench/run.sh [--quick]
#   --quick       5 s per measurement (DURATION sets any other length)
#   BACKENDS      the set-ups measured in the same run: 2 (two backend ports, balancing is real), 1 (a sidecar in
#                 front of one endpoint); access-log rows are measured in the first set-up listed
#   SCENARIOS     the plain HTTP/1.1 rows, SIZE/CONNECTIONS (default "1k/32 1k/256 64k/32 1m/32"); the HTTPS and
#                 HTTP/2 rows (1 KiB, 32 connections) run in every set-up whatever this says
#   TRACE_ROWS    the rows of SCENARIOS that also measure access logging (default "1k/32 1k/256 64k/32"; empty: none)
#   SIDEKICK_BIN  measure this binary instead of building one
#   RESULTS_DIR   where results.md and results.svg go. Default: bench/ for a full run (ROUNDS >= 3, DURATION
#                 >= 15), bench/out/ otherwise, so a short run cannot overwrite the committed figures.
#   BENCH_PORT_BASE  moves every port (default 18180), to run beside another checkout's benchmark
# Raw rows: bench/out/results.tsv. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
LOGS=$OUT/logs   # the proxies' stderr and access logs, emptied at every start
DURATION=${DURATION:-15}
[ "${1:-}" = "--quick" ] && DURATION=5
# Rounds of the whole matrix; each figure in results.md is the median of its rounds (this machine is shared).
ROUNDS=${ROUNDS:-3}
BACKENDS=${BACKENDS:-"2 1"}
TRACE_ROWS=${TRACE_ROWS-"1k/32 1k/256 64k/32"}   # set and empty: no logging rows
SCENARIOS=${SCENARIOS:-"1k/32 1k/256 64k/32 1m/32"}
if [ -z "${RESULTS_DIR:-}" ]; then
  if [ "$ROUNDS" -ge 3 ] && [ "$DURATION" -ge 15 ]; then RESULTS_DIR=$ROOT/bench; else RESULTS_DIR=$OUT; fi
fi
rm -rf "$LOGS"; mkdir -p "$OUT" "$LOGS" "$RESULTS_DIR"

source bench/backend.sh   # B1 B2 DIRECT_TLS PORT_BASE and the functions below
install_missing wrk h2load haproxy nginx clang openssl
write_backend
cat "$OUT/tls/cert.pem" "$OUT/tls/key.pem" > "$OUT/haproxy.pem"

if [ -n "${SIDEKICK_BIN:-}" ]; then
  SIDEKICK=$SIDEKICK_BIN
else
  echo "building sidekick (Native AOT)…"
  dotnet publish src/Sidekick -c Release -r linux-x64 -o "$OUT/sidekick" -v quiet -nologo >/dev/null
  SIDEKICK=$OUT/sidekick/sidekick
fi

# Every proxy process is started once and serves every round, so a row's figures come from the same processes
# in each round. Keys are "BACKENDS/TARGET"; ports are handed out above the backend's.
declare -A PORT TLS_PORT PIDS TLS_PIDS LOGFILE
NEXT_PORT=$((PORT_BASE + 20))
new_port() { printf -v "$1" %s $((NEXT_PORT += 1)); }
STARTED=()   # pids of the processes this script started, for cleanup
NGINX_PIDFILES=()
FIRST=${BACKENDS%% *}   # direct rows, access-log rows and start-up are measured in this set-up only

cleanup() {
  stop_backend
  local f pid
  for f in "${NGINX_PIDFILES[@]}"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

servers_of() { [ "$1" = 1 ] && echo "$B1" || echo "$B1 $B2"; }
sidekick_backends_of() { [ "$1" = 1 ] && echo "http://127.0.0.1:$B1" || echo "http://127.0.0.1:{$B1...$B2}"; }

# Every TLS listener is a process of its own, as sidekick's must be (one --address per process): the plain
# rows' CPU and RSS then carry no TLS state (HAProxy's RSS is ~5 MB larger with a TLS listener), and the
# TLS rows are measured on the process that serves them.

# start_haproxy N TARGET THREADS plain|tls|log: HAProxy in the foreground (-db: the access log goes to its
# stdout, and RSS counts the pages of the binary and libraries as sidekick's does; a daemon's forked process
# leaves those mapped before the fork out). TLS: 1.3 only, ALPN h2 for h2load (wrk sends no ALPN and speaks
# HTTP/1.1).
start_haproxy() {
  local n=$1 target=$2 threads=$3 mode=$4 key="$1/$2" cfg="$OUT/$2-$4-$1.cfg" port out=/dev/null
  new_port port
  case $mode in
    plain) PORT[$key]=$port
      write_haproxy "$cfg" --threads "$threads" --servers "$(servers_of "$n")" "127.0.0.1:$port";;
    tls) TLS_PORT[$key]=$port
      write_haproxy "$cfg" --threads "$threads" --servers "$(servers_of "$n")" \
        "127.0.0.1:$port ssl crt $OUT/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3";;
    log) PORT[$key]=$port; LOGFILE[$key]=$LOGS/$target-$n.log; out=${LOGFILE[$key]}
      write_haproxy "$cfg" --threads "$threads" --servers "$(servers_of "$n")" --log "127.0.0.1:$port";;
  esac
  haproxy -db -f "$cfg" >>"$out" 2>>"$LOGS/$target-$mode-$n.err" &
  if [ "$mode" = tls ]; then TLS_PIDS[$key]=$!; else PIDS[$key]=$!; fi
  STARTED+=($!)
}

# start_nginx N plain|tls: nginx as a reverse proxy (least_conn, upstream keep-alive, one worker).
start_nginx() {
  local n=$1 mode=$2 key="$1/nginx" port upstream="" p listen
  new_port port
  if [ "$mode" = tls ]; then
    TLS_PORT[$key]=$port
    listen="listen 127.0.0.1:$port ssl http2; ssl_protocols TLSv1.3; ssl_certificate $OUT/tls/cert.pem; ssl_certificate_key $OUT/tls/key.pem;"
  else
    PORT[$key]=$port; listen="listen 127.0.0.1:$port;"
  fi
  for p in $(servers_of "$n"); do upstream+="server 127.0.0.1:$p; "; done
  cat > "$OUT/nginx-$mode-$n.conf" <<CONF
worker_processes 1; pid $OUT/nginx-$mode-$n.pid; error_log $LOGS/nginx-$mode-$n.err; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { least_conn; ${upstream}keepalive 256; }
  server { $listen
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; } } }
CONF
  nginx -c "$OUT/nginx-$mode-$n.conf" -p "$OUT"
  NGINX_PIDFILES+=("$OUT/nginx-$mode-$n.pid")
}

# start_sidekick N TARGET [FLAG...]: sidekick as users run it (the binary sets its own runtime options). With
# --trace among the flags its stdout (the trace lines) is appended to a file, else discarded.
start_sidekick() {
  local n=$1 target=$2 key="$1/$2" port out=/dev/null
  shift 2
  new_port port; PORT[$key]=$port
  case " $* " in *" --trace all "*) LOGFILE[$key]=$LOGS/$target-$n.log; out=${LOGFILE[$key]};; esac
  "$SIDEKICK" --address 127.0.0.1:$port --health-path=/health "$@" "$(sidekick_backends_of "$n")" >>"$out" 2>>"$LOGS/$target-$n.err" &
  PIDS[$key]=$!; STARTED+=($!)
}

# start_sidekick_tls N: sidekick with --cert/--key.
start_sidekick_tls() {
  local n=$1 key="$1/sidekick" tls
  new_port tls; TLS_PORT[$key]=$tls
  "$SIDEKICK" --address 127.0.0.1:$tls --cert "$OUT/tls/cert.pem" --key "$OUT/tls/key.pem" --health-path=/health \
    --trace "" --quiet "$(sidekick_backends_of "$n")" >/dev/null 2>>"$LOGS/sidekick-tls-$n.err" &
  TLS_PIDS[$key]=$!; STARTED+=($!)
}

start_backend
PORT[$FIRST/direct]=$B1; TLS_PORT[$FIRST/direct]=$DIRECT_TLS

# sidekick: startup to first proxied 200, the median of five launches (one launch on a busy shared
# machine can take twice as long as the next). The client polls from before the launch, so its own start
# is not counted (a curl per attempt added 5-35 ms, depending on the host). The last launch stays up as the
# first set-up's plain sidekick.
new_port SK_STARTUP
startups=()
for launch in 1 2 3 4 5; do
  python3 bench/first-response.py "$SK_STARTUP" /1k > "$OUT/first-200.txt" &
  POLLER=$!
  sleep 0.3
  start=$(date +%s%N)
  "$SIDEKICK" --address 127.0.0.1:$SK_STARTUP --health-path=/health --trace "" --quiet \
    "$(sidekick_backends_of "$FIRST")" >/dev/null 2>&1 &
  SK_PID=$!; STARTED+=($SK_PID)
  wait $POLLER
  startups+=($(( ($(cat "$OUT/first-200.txt") - start) / 1000000 )))
  if [ $launch -lt 5 ]; then kill $SK_PID; wait $SK_PID 2>/dev/null || true; fi
done
STARTUP_MS="${startups[*]}"   # report.py takes the median
PORT[$FIRST/sidekick]=$SK_STARTUP; PIDS[$FIRST/sidekick]=$SK_PID

for n in $BACKENDS; do
  for mode in plain tls; do
    start_haproxy "$n" haproxy default $mode
    start_haproxy "$n" haproxy-1t 1 $mode
    start_nginx "$n" $mode
  done
  [ "$n" != "$FIRST" ] && start_sidekick "$n" sidekick --trace "" --quiet
  start_sidekick_tls "$n"
done
# Access logging, the observability issue's question: sidekick's traces to a file as JSON and as text lines,
# against HAProxy's own access log (option httplog) to a file, each beside the same proxy with logging off.
start_haproxy "$FIRST" haproxy+log default log
start_haproxy "$FIRST" haproxy-1t+log 1 log
start_sidekick "$FIRST" sidekick+json --trace all --json
start_sidekick "$FIRST" sidekick+text --trace all

# Wait until every listener proxies a 200 (a minute at most: a proxy that failed to start says so in
# bench/out/logs), then let the health checks and start-up settle.
wait_for() {
  local deadline=$((SECONDS + 60))
  until curl -skf -o /dev/null "$2"; do
    [ $SECONDS -lt $deadline ] || { echo "$1 does not answer $2: see $LOGS" >&2; exit 1; }
    sleep 0.05
  done
}
for key in "${!PORT[@]}"; do wait_for "$key" "http://127.0.0.1:${PORT[$key]}/1k"; done
for key in "${!TLS_PORT[@]}"; do wait_for "$key (TLS)" "https://127.0.0.1:${TLS_PORT[$key]}/1k"; done
sleep 1
SK_IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/${PIDS[$FIRST/sidekick]}/status)
HAP_IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/${PIDS[$FIRST/haproxy]}/status)
HAP1_IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/${PIDS[$FIRST/haproxy-1t]}/status)
HAP_THREADS=$(awk '/Threads/ {print $2}' /proc/${PIDS[$FIRST/haproxy]}/status)

# What each TLS listener negotiates with a default OpenSSL client (wrk's library and defaults): every row
# compared must be TLS 1.3.
TLS_INFO=$OUT/tls.tsv
echo -e "backends\ttarget\tprotocol\tcipher" > "$TLS_INFO"
for key in "${!TLS_PORT[@]}"; do
  info=$(openssl s_client -connect 127.0.0.1:${TLS_PORT[$key]} -brief </dev/null 2>&1 || true)
  echo -e "${key%%/*}\t${key#*/}\t$(sed -n 's/^Protocol version: //p' <<<"$info")\t$(sed -n 's/^Ciphersuite: //p' <<<"$info")" >> "$TLS_INFO"
done

# The processes serving a row (nginx: master + workers; TLS rows: the TLS listener's process).
pids_of() {
  local key=$1 kind=$2 master
  case $key in
    */direct) echo "";;
    */nginx) master=$(cat "$OUT/nginx-$([ "$kind" = http ] && echo plain || echo tls)-${key%%/*}.pid")
      echo "$master $(pgrep -P "$master" | tr '\n' ' ')";;
    *) if [ "$kind" = http ]; then echo "${PIDS[$key]}"; else echo "${TLS_PIDS[$key]}"; fi;;
  esac
}
cpu_ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }
# ctx_switches PIDS: voluntary + involuntary context switches of every thread, summed (threads that end within a
# window take theirs with them; the proxies' threads live for the whole run). A hop between threads, which CPU time
# per request shows only blurred by the host's noise, shows here as a count.
ctx_switches() { local p; for p in $1; do cat /proc/$p/task/*/status 2>/dev/null; done | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }
# mem_kb PIDS: "RSS ANON" in KiB, summed. The anonymous part (heap, stacks) is the memory a proxy owns; the
# rest of RSS is pages of its executable and libraries, which the kernel shares between processes.
mem_kb() { local p; for p in $1; do awk '/VmRSS/ {r = $2} /RssAnon/ {a = $2} END {print r, a}' /proc/$p/status; done | awk '{r += $1; a += $2} END {print r + 0, a + 0}'; }
# rotate K WORD...: the words starting at the K-th (mod count), so no proxy always runs first or right after
# the same neighbour (the host's state drifts within a round).
rotate() { local k=$1; shift; local a=("$@") i; for ((i = 0; i < ${#a[@]}; i++)); do echo "${a[(i + k) % ${#a[@]}]}"; done; }

RESULTS=$OUT/results.tsv
python3 bench/load-row.py --header > "$RESULTS"
HZ=$(getconf CLK_TCK)
# measure_once KIND N TARGET SIZE CONNS: one window of load; prints one row of results.tsv.
#   http: wrk over plain HTTP/1.1; https: wrk over TLS 1.3 (HTTP/1.1 keep-alive); h2: h2load over TLS, ALPN h2,
#   CONNS connections x 8 streams. A 1 s warm-up comes first (new connections, TLS handshakes, caches).
measure_once() {
  local kind=$1 n=$2 target=$3 size=$4 conns=$5 key="$2/$3" pids url label=$4 before after switches_before switches mem logged="" load
  local log=${LOGFILE[$key]:-} log_start=0
  pids=$(pids_of "$key" "$kind")
  case $kind in
    http) url="http://127.0.0.1:${PORT[$key]}/$size";;
    https) url="https://127.0.0.1:${TLS_PORT[$key]}/$size"; label="$size tls";;
    h2) url="https://127.0.0.1:${TLS_PORT[$key]}/$size"; label="$size h2";;
  esac
  # Access logs are emptied before each warm-up (they grow by ~100 MB a window) and counted from where the
  # window starts. HAProxy clears O_APPEND on its stdout when it makes it non-blocking, so its file keeps its
  # length as a hole after emptying: counting from an offset works for both.
  [ -n "$log" ] && : > "$log"
  [ "$kind" = h2 ] || wrk -t2 -c"$conns" -d1s "$url" >/dev/null 2>&1 || true
  [ -n "$log" ] && log_start=$(stat -c %s "$log")
  before=$( [ -n "$pids" ] && cpu_ticks "$pids" || echo 0 )
  switches_before=$( [ -n "$pids" ] && ctx_switches "$pids" || echo 0 )
  if [ "$kind" = h2 ]; then
    h2load -t2 -c"$conns" -m8 -D "$DURATION" --warm-up-time=1 "$url" > "$OUT/load.txt" 2>&1 &
    load=$!; sleep $((DURATION / 2 + 1))
  else
    wrk -t2 -c"$conns" -d"${DURATION}s" --latency "$url" > "$OUT/load.txt" 2>&1 &
    load=$!; sleep $((DURATION / 2))
  fi
  mem=$( [ -n "$pids" ] && mem_kb "$pids" || echo 0 0 )
  wait $load
  after=$( [ -n "$pids" ] && cpu_ticks "$pids" || echo 0 )
  switches=$(( $( [ -n "$pids" ] && ctx_switches "$pids" || echo 0 ) - switches_before ))
  [ -n "$log" ] && logged=$(tail -c +$((log_start + 1)) "$log" | wc -l)
  python3 bench/load-row.py "$([ "$kind" = h2 ] && echo h2load || echo wrk)" "$OUT/load.txt" "$n" "$target" "$label" \
    "$([ "$kind" = h2 ] && echo "${conns}x8" || echo "$conns")" "$round" "$((after - before))" "$HZ" $mem "$logged" "$switches"
}

# measure KIND N TARGET SIZE CONNS: measure_once, again (up to twice more) when the window took far longer
# than DURATION: this host (a VM) is sometimes paused for minutes, which leaves a row with a few req/s.
measure() {
  local row attempt
  for attempt in 1 2 3; do
    row=$(measure_once "$@")
    awk -v s="${row##*$'\t'}" -v d="$DURATION" 'BEGIN { exit !(s <= d * 1.5 + 1) }' && break
    echo "the window took ${row##*$'\t'} s instead of $DURATION s (the host stalled); measuring again" >&2
  done
  echo "$row" | tee -a "$RESULTS"
}

PROXIES="haproxy haproxy-1t nginx sidekick"
LOGGERS="haproxy+log haproxy-1t+log sidekick+json sidekick+text"
for round in $(seq "$ROUNDS"); do
  for n in $BACKENDS; do
    direct=$([ "$n" = "$FIRST" ] && echo direct || true)
    for scenario in $SCENARIOS; do
      loggers=$([ "$n" = "$FIRST" ] && [[ " $TRACE_ROWS " == *" $scenario "* ]] && echo "$LOGGERS" || true)
      for target in $(rotate $((round - 1)) $direct $PROXIES $loggers); do
        measure http "$n" "$target" "${scenario%/*}" "${scenario#*/}"
      done
    done
    # HTTPS from the client, and HTTP/2 from the client over TLS; every proxy speaks HTTP/1.1 to the backend.
    for target in $(rotate $((round - 1)) $direct $PROXIES); do measure https "$n" "$target" 1k 32; done
    for target in $(rotate $((round - 1)) $direct $PROXIES); do measure h2 "$n" "$target" 1k 32; done
  done
done

python3 bench/report.py --tsv "$RESULTS" --tls "$TLS_INFO" --out "$RESULTS_DIR" --startup-ms "$STARTUP_MS" \
  --sidekick-idle-kb "$SK_IDLE_RSS" --haproxy-idle-kb "$HAP_IDLE_RSS" --haproxy-1t-idle-kb "$HAP1_IDLE_RSS" \
  --haproxy-threads "$HAP_THREADS" --binary-bytes "$(stat -c %s "$SIDEKICK")" --duration "$DURATION"
echo "wrote $RESULTS_DIR/results.md and $RESULTS_DIR/results.svg"
