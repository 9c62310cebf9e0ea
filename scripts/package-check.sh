#!/usr/bin/env bash
# Checks what scripts/package.sh built, for real on this machine (CI runs it after package.sh, as root):
#   - the tarball and the .deb carry the git version in their names, and SHA256SUMS matches them;
#   - the .deb installs with dpkg -i; /usr/bin/sidekick --version prints the git version; the unit file is where
#     the package lists it and systemd-analyze verify accepts it (where systemd-analyze exists); the man page
#     renders; the installed binary serves sidekick_build_info with the version and the commit;
#   - the tarball holds the same binary;
#   - the Kubernetes examples and the Dockerfile pass scripts/lint-deploy.mjs against the installed binary;
#   - the package purges cleanly.
# Needs root for dpkg (or sudo). Leaves the machine without the package, as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "package-check.sh: FAILED: $*" >&2; exit 1; }
ok() { echo "package-check.sh: ok: $*"; }

sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || fail "dpkg -i needs root: run as root or install sudo"
  sudo=(sudo)
fi

version=$(bash scripts/version.sh)
deb_version=$(bash scripts/version.sh --debian)
commit=$(bash scripts/version.sh --commit)
deb=artifacts/packages/sidekick_${deb_version}_amd64.deb
tarball=artifacts/packages/sidekick-${version}-linux-x64.tar.gz
[ -f "$deb" ] || fail "$deb not found: run scripts/package.sh first (from the same commit)"
[ -f "$tarball" ] || fail "$tarball not found: run scripts/package.sh first (from the same commit)"
(cd artifacts/packages && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match the packages"
ok "$tarball and $deb (SHA256SUMS matches)"

if dpkg-query -W sidekick >/dev/null 2>&1; then
  fail "a sidekick package is installed already ($(dpkg-query -W -f='${Version}' sidekick)); remove it first (dpkg --purge sidekick)"
fi
cleanup() { "${sudo[@]}" dpkg --purge sidekick >/dev/null 2>&1 || true; }
trap cleanup EXIT

"${sudo[@]}" dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"
installed=$(dpkg-query -W -f='${Status} ${Version}' sidekick)
[ "$installed" = "install ok installed $deb_version" ] || fail "dpkg says '$installed', expected 'install ok installed $deb_version'"
ok "dpkg -i: $installed"

printed=$(/usr/bin/sidekick --version)
[ "$printed" = "sidekick version $version" ] || fail "/usr/bin/sidekick --version printed '$printed', expected 'sidekick version $version'"
ok "/usr/bin/sidekick --version: $printed"

unit=$(dpkg -L sidekick | grep '/sidekick\.service$' || true)
[ "$unit" = /lib/systemd/system/sidekick.service ] || fail "the package lists the unit as '$unit', expected /lib/systemd/system/sidekick.service"
[ -f "$unit" ] || fail "$unit is listed by the package but not on disk"
grep -qx 'ExecStart=/usr/bin/sidekick $SIDEKICK_OPTIONS $SIDEKICK_SITES $SIDEKICK_ARGS' "$unit" ||
  fail "$unit does not start /usr/bin/sidekick \$SIDEKICK_OPTIONS \$SIDEKICK_SITES \$SIDEKICK_ARGS (upstream's variables, then ours)"
dpkg-query -W -f='${Conffiles}\n' sidekick | grep -q '^ /etc/default/sidekick ' || fail "/etc/default/sidekick is not a conffile"
ok "unit at $unit, /etc/default/sidekick a conffile"

if command -v systemd-analyze >/dev/null; then
  # verify also runs `man sidekick` for Documentation=man:sidekick(1), so the installed man page is checked too
  # (where man is installed: without it that check can only fail).
  verify=(systemd-analyze verify)
  command -v man >/dev/null || verify+=(--man=no)
  "${verify[@]}" "$unit" || fail "${verify[*]} $unit"
  ok "systemd-analyze verify accepts $unit"
  # Exposure 0 (locked down) to 10 (root, everything open); informational, the hardening is in the unit file.
  exposure=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "package-check.sh: systemd-analyze security: exposure ${exposure:-unknown}"
else
  echo "package-check.sh: skipped: systemd-analyze verify (systemd-analyze is not installed here)"
fi

if command -v groff >/dev/null; then
  warnings=$(zcat /usr/share/man/man1/sidekick.1.gz | groff -man -Tutf8 -ww -z 2>&1)
  [ -z "$warnings" ] || fail "the man page has groff warnings: $warnings"
fi
zcat /usr/share/man/man1/sidekick.1.gz | grep -qF -- 'health\-path' || fail "the man page does not hold the --help text"
ok "man page /usr/share/man/man1/sidekick.1.gz"

# The installed binary, run for real: its metrics carry the same version and the commit.
command -v curl >/dev/null || fail "curl is not installed (scripts/test.sh installs it)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18399)
log=$(mktemp)
/usr/bin/sidekick --address "127.0.0.1:$port" http://127.0.0.1:9 >"$log" 2>&1 &
pid=$!
metrics=
for _ in $(seq 1 100); do
  metrics=$(curl -fsS "http://127.0.0.1:$port/.prometheus/metrics" 2>/dev/null) && break
  sleep 0.1
done
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
line=$(grep '^sidekick_build_info{' <<<"$metrics" || true)
expected="sidekick_build_info{version=\"$version\",commit=\"$commit\",runtime=\".NET "
[[ $line == "$expected"* && $line == *'"} 1' ]] || fail "metrics show '$line', expected '$expected...} 1' (sidekick's output: $(cat "$log"))"
rm -f "$log"
ok "$line"

extract=$(mktemp -d)
tar -C "$extract" -xzf "$tarball"
cmp -s "$extract/sidekick-$version-linux-x64/sidekick" /usr/bin/sidekick || fail "the tarball's binary differs from the .deb's"
for file in sidekick.1 sidekick.service sidekick.env LICENSE README.md; do
  [ -f "$extract/sidekick-$version-linux-x64/$file" ] || fail "the tarball has no $file"
done
rm -rf "$extract"
ok "the tarball holds the same binary, its man page, unit, environment file, LICENSE and README"

if [ ! -d node_modules/yaml ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node scripts/lint-deploy.mjs /usr/bin/sidekick || fail "scripts/lint-deploy.mjs"

trap - EXIT
"${sudo[@]}" dpkg --purge sidekick >/dev/null || fail "dpkg --purge sidekick"
[ ! -e /usr/bin/sidekick ] && [ ! -e /lib/systemd/system/sidekick.service ] && [ ! -e /etc/default/sidekick ] \
  || fail "dpkg --purge left files behind"
ok "dpkg --purge removed the binary, the unit and /etc/default/sidekick"
echo "package-check.sh: all checks passed"
