#!/usr/bin/env bash
# Checks that src/Sidekick/method-order.txt (the Native AOT method layout bench/layout.sh writes) still names the
# methods of the binary it lays out. The compiler skips names it does not know without a word, so a rename or a
# move of a hot method quietly puts it back in the default order (measured: 1-4 % of req/s and 1-4 MB of RSS for
# the whole list, docs/architecture.md). Warns when more than 1 % of the listed names are missing from the
# binary's symbols, and fails above 5 %: compiler-generated names (async state machines, lambdas) are numbered
# by their place in the file, so every edit near a hot method renames a few, and a stale tail costs little while
# a list that lost its hot half costs the figures above. `bash bench/layout.sh` regenerates the list. Methods added since the last regeneration
# cannot be seen from here: they wait for the next regeneration, which each performance session runs.
# Usage: scripts/layout-check.sh [BINARY]   (default: artifacts/sidekick/sidekick, as scripts/package.sh builds it)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-artifacts/sidekick/sidekick}
symbols=$binary
[ -f "$binary.dbg" ] && symbols=$binary.dbg
[ -f "$symbols" ] || { echo "layout-check: no $symbols (run scripts/package.sh first)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
nm "$symbols" | awk 'NF == 3 { print $3 }' | sort -u > "$work/symbols"
grep -v '^#' src/Sidekick/method-order.txt | sort -u > "$work/listed"
[ -s "$work/symbols" ] || { echo "layout-check: $symbols has no symbol table" >&2; exit 2; }
listed=$(wc -l < "$work/listed")
missing=$(comm -23 "$work/listed" "$work/symbols" | wc -l)
echo "layout-check: $((listed - missing)) of $listed methods in src/Sidekick/method-order.txt are in $binary ($missing missing)"
if [ $((missing * 100)) -gt $((listed * 5)) ]; then
  echo "layout-check: the method layout is stale (more than 5 % of its names are gone); regenerate it: bash bench/layout.sh" >&2
  comm -23 "$work/listed" "$work/symbols" | grep '^sidekick_' | head -20 >&2 || true
  exit 1
elif [ $((missing * 100)) -gt "$listed" ]; then
  echo "layout-check: warning: more than 1 % of the layout's names are gone; regenerate it soon: bash bench/layout.sh" >&2
fi
