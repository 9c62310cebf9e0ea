#!/usr/bin/env bash
# Regenerates src/Sidekick/method-order.txt, the order in which the Native AOT build lays out managed methods.
# Usage: bench/layout.sh     (Linux, root: it reads /proc/PID/pagemap; ~5 minutes)
#
# The build places the listed methods first, together, so the code sidekick runs once started shares as few
# pages as possible; the rest of the ~8 MB of code leaves the resident set after start-up. Each pass builds the binary,
# runs a plain and a TLS sidekick under the bench workload with fault-around disabled for the executable
# (layout-split.c), and lists the methods on the code pages they touched. The second pass starts from the
# first pass's layout, where fewer untouched methods share a page with touched ones.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$PWD/bench/out/layout
ORDER=src/Sidekick/method-order.txt
mkdir -p "$OUT"
source bench/backend.sh
install_missing wrk h2load nginx clang openssl cc
write_backend
PLAIN=18185; TLS=18195

cleanup() {
  stop_backend
  for pid in ${P1:-} ${P2:-}; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
start_backend
cc -O2 -shared -fPIC -o "$OUT/layout-split.so" bench/layout-split.c

for pass in 1 2; do
  echo "pass $pass: building sidekick (Native AOT)…"
  dotnet publish src/Sidekick -c Release -r linux-x64 -o "$OUT/sidekick" -v quiet -nologo >/dev/null
  SIDEKICK=$OUT/sidekick/sidekick
  LD_PRELOAD=$OUT/layout-split.so "$SIDEKICK" --address 127.0.0.1:$PLAIN --health-path=/health --trace "" --quiet \
    "http://127.0.0.1:{$B1...$B2}" >/dev/null 2>&1 &
  P1=$!
  LD_PRELOAD=$OUT/layout-split.so "$SIDEKICK" --address 127.0.0.1:$TLS --cert "$OUT/tls/cert.pem" --key "$OUT/tls/key.pem" \
    --health-path=/health --trace "" --quiet "http://127.0.0.1:{$B1...$B2}" >/dev/null 2>&1 &
  P2=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PLAIN/1k" && curl -skf -o /dev/null "https://127.0.0.1:$TLS/1k"; do sleep 0.05; done

  # What the bench runs, and what clients commonly send besides. The pages are sampled after each load: a
  # second after a burst of closed connections sidekick compacts its heap and drops its code pages again.
  PAGES=$OUT/pages.$pass; rm -f "$PAGES"
  sample() { python3 bench/layout.py sample "$PAGES" "$SIDEKICK" $P1 $P2; }
  for size in 1k 64k 1m; do wrk -t2 -c32 -d3s "http://127.0.0.1:$PLAIN/$size" >/dev/null; sample; done
  wrk -t2 -c256 -d3s "http://127.0.0.1:$PLAIN/1k" >/dev/null; sample
  h2load -t2 -c32 -m8 -D 4 "https://127.0.0.1:$TLS/1k" >/dev/null 2>&1; sample
  for round in 1 2 3; do h2load -t2 -c32 -m8 -n 3200 "https://127.0.0.1:$TLS/1k" >/dev/null 2>&1; sample; done
  for round in 1 2 3 4 5; do
    curl -s -o /dev/null -I "http://127.0.0.1:$PLAIN/64k"
    curl -s -o /dev/null -H "Range: bytes=0-99" "http://127.0.0.1:$PLAIN/1m"
    curl -s -o /dev/null "http://127.0.0.1:$PLAIN/missing"
    curl -s -o /dev/null -X POST --data-binary "@$OUT/www/1k" "http://127.0.0.1:$PLAIN/1k"
    curl -s -o /dev/null -X PUT --data-binary "@$OUT/www/1m" "http://127.0.0.1:$PLAIN/1m"
    curl -sk -o /dev/null "https://127.0.0.1:$TLS/64k"
  done
  sleep 6   # a few health-probe rounds
  python3 bench/layout.py write "$ORDER" "$PAGES" "$SIDEKICK" $P1 $P2
  kill $P1 $P2; wait $P1 $P2 2>/dev/null || true
done
echo "rebuild to use it: dotnet publish src/Sidekick -c Release -r linux-x64"
