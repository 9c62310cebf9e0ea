#!/usr/bin/env bash
# Builds the release artifacts from this checkout with one Native AOT publish:
#   artifacts/sidekick/sidekick                            the binary (as the README's release build)
#   artifacts/packages/sidekick-VERSION-linux-x64.tar.gz   binary, man page, systemd unit, environment file, LICENSE, README
#   artifacts/packages/sidekick_DEBVERSION_amd64.deb       the same installed as /usr/bin/sidekick, /lib/systemd/system/
#                                                          sidekick.service, /etc/default/sidekick, man page, copyright
#   artifacts/packages/SHA256SUMS
#   artifacts/image/                                       the files of the container image (the Dockerfile copies it to /)
# VERSION comes from git (scripts/version.sh): a tag v1.2.3 gives 1.2.3, any other commit 0.0.0-g<commit>. It is
# stamped into the binary (--version, the sidekick_build_info metric) and names the packages. Installs clang, lld,
# zlib1g-dev and binutils from Debian/Ubuntu when missing and running as root (or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "package.sh: $*"; }
fail() { echo "package.sh: $*" >&2; exit 1; }

need=()
command -v clang >/dev/null || need+=(clang)
command -v ld.lld >/dev/null || need+=(lld)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
command -v readelf >/dev/null || need+=(binutils)
command -v dpkg-deb >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || fail "missing ${need[*]} (Debian packages) and not root: install them, then run again"
    sudo=(sudo)
  fi
  say "installing: ${need[*]}"
  "${sudo[@]}" apt-get update -qq >/dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

version=$(bash scripts/version.sh)
deb_version=$(bash scripts/version.sh --debian)
commit=$(bash scripts/version.sh --commit)
# Every file in the packages carries the commit's time, so the same commit gives the same archives.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
say "version $version (Debian $deb_version), commit $commit"

out=artifacts/sidekick
packages=artifacts/packages
stage=artifacts/stage
rm -rf "$out" "$packages" "$stage" artifacts/image
mkdir -p "$packages" "$stage"

# The one publish. The commit goes in as SourceRevisionId so a build without .git (SIDEKICK_COMMIT) carries it too;
# the SDK appends it to the informational version after a '+'.
publish=(dotnet publish src/Sidekick -c Release -r linux-x64 -o "$out" -nologo -p:Version="$version")
[ "$commit" = unknown ] || publish+=(-p:SourceRevisionId="$commit")
say "${publish[*]}"
"${publish[@]}"
binary=$out/sidekick
[ -x "$binary" ] || fail "dotnet publish produced no $binary"

# The binary must say what the packages are named after.
printed=$("$binary" --version)
[ "$printed" = "sidekick version $version" ] || fail "$binary --version printed '$printed', expected 'sidekick version $version'"

# The man page is the --help text, so it never disagrees with the binary. In roff a line starting with '.' or
# "'" is a request and '\' an escape; '-' becomes '\-' so flags copy and paste as ASCII hyphens.
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
{
  echo ".TH SIDEKICK 1 \"$date\" \"sidekick $version\" \"User Commands\""
  echo ".SH NAME"
  echo "sidekick \\- high-performance sidecar HTTP load balancer"
  echo ".SH SYNOPSIS"
  echo ".B sidekick"
  echo "[\\fIFLAGS\\fR] \\fISITE1\\fR [\\fISITE2\\fR ...]"
  echo ".SH DESCRIPTION"
  echo "sidekick runs next to a client process and balances its HTTP requests over the backends of the first"
  echo "site that has a healthy one, probing every backend's readiness path and failing over to the next site"
  echo "when a whole site is down. The text below is what"
  echo ".B sidekick \\-\\-help"
  echo "prints."
  echo ".PP"
  echo ".nf"
  "$binary" --help | sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
  echo ".fi"
  echo ".SH EXIT STATUS"
  echo "0 after a graceful shutdown (SIGTERM, SIGINT), 2 for a usage mistake (a bad flag or SITE), 1 for any"
  echo "other fatal error (e.g. the address is in use). Each error is one line on standard error."
  echo ".SH SIGNALS"
  echo "SIGHUP re-reads and re-resolves the sites; SIGTERM and SIGINT stop accepting and let requests in"
  echo "flight finish within \\-\\-shutdown\\-timeout."
  echo ".SH FILES"
  echo ".TP"
  echo ".I /etc/default/sidekick"
  echo "the command line (SIDEKICK_ARGS) and environment of the systemd service"
  echo ".TP"
  echo ".I /lib/systemd/system/sidekick.service"
  echo "the systemd unit"
  echo ".SH SEE ALSO"
  echo ".BR systemctl (1),"
  echo ".BR systemd.exec (5)"
} > "$stage/sidekick.1"

# The tarball: everything in one versioned folder, nothing installed anywhere.
name=sidekick-$version-linux-x64
mkdir -p "$stage/tar/$name"
install -m 0755 "$binary" "$stage/tar/$name/sidekick"
install -m 0644 "$stage/sidekick.1" deploy/systemd/sidekick.service LICENSE README.md "$stage/tar/$name/"
install -m 0644 deploy/systemd/sidekick.default "$stage/tar/$name/sidekick.env"
tarball=$packages/$name.tar.gz
tar -C "$stage/tar" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner -cf - "$name" | gzip -9n > "$tarball"

# The .deb. Its dependencies are the shared libraries the binary names (readelf), plus OpenSSL, which .NET loads
# at run time for TLS; libc6 at least the newest symbol version the binary uses.
# (lintian's remaining findings: "embedded-library zlib" is .NET's own zlib-ng, linked into every AOT binary, and
# "maintainer-script-calls-systemctl" is the disable on removal, which deb-systemd-helper does not cover.)
root=$stage/deb
install -D -m 0755 "$binary" "$root/usr/bin/sidekick"
install -D -m 0644 deploy/systemd/sidekick.service "$root/lib/systemd/system/sidekick.service"
install -D -m 0644 deploy/systemd/sidekick.default "$root/etc/default/sidekick"
install -d "$root/usr/share/man/man1"
gzip -9n < "$stage/sidekick.1" > "$root/usr/share/man/man1/sidekick.1.gz"
chmod 0644 "$root/usr/share/man/man1/sidekick.1.gz"
install -d "$root/usr/share/doc/sidekick"
maintainer=${SIDEKICK_MAINTAINER:-sidekick for .NET developers <sidekick@example.org>}
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: sidekick"
  echo
  echo "Files: *"
  echo "Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) the sidekick for .NET developers"
  echo "License: Apache-2.0"
  echo " On Debian systems the full text of the Apache License 2.0 is in"
  echo " /usr/share/common-licenses/Apache-2.0."
} > "$root/usr/share/doc/sidekick/copyright"
# A native package's changelog: one entry, this build.
{
  echo "sidekick ($deb_version) unstable; urgency=medium"
  echo
  echo "  * Built from commit $commit."
  echo
  echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$root/usr/share/doc/sidekick/changelog.gz"
chmod 0644 "$root/usr/share/doc/sidekick/copyright" "$root/usr/share/doc/sidekick/changelog.gz"

depends=()
glibc=$(readelf -W --dyn-syms "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
for library in $(readelf -d "$binary" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
  case $library in
    libc.so.6 | libm.so.6 | libdl.so.2 | libpthread.so.0 | librt.so.1 | ld-linux-x86-64.so.2) dep="libc6 (>= $glibc)" ;;
    libgcc_s.so.1) dep=libgcc-s1 ;;
    libstdc++.so.6) dep=libstdc++6 ;;
    libz.so.1) dep=zlib1g ;;
    *) fail "the binary needs $library and package.sh does not know its Debian package: add it to the list" ;;
  esac
  [[ " ${depends[*]} " == *" $dep"* ]] || depends+=("$dep")
done
depends+=("libssl3 | libssl3t64")

install -d "$root/DEBIAN"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
{
  echo "Package: sidekick"
  echo "Version: $deb_version"
  echo "Architecture: amd64"
  echo "Maintainer: $maintainer"
  echo "Installed-Size: $installed_size"
  echo "Depends: $(IFS=,; echo "${depends[*]}" | sed 's/,/, /g')"
  echo "Section: net"
  echo "Priority: optional"
  echo "Description: high-performance sidecar HTTP load balancer"
  echo " sidekick runs next to each client process (a Spark executor, a backup job) and"
  echo " balances its requests over the healthy backends of the first available site,"
  echo " failing over to the next site when a whole site is down. A drop-in replacement"
  echo " for minio/sidekick, built with .NET Native AOT."
  echo " ."
  echo " Version $version."
  echo " Commit $commit."
} > "$root/DEBIAN/control"
echo /etc/default/sidekick > "$root/DEBIAN/conffiles"
# The unit is installed, not enabled: it needs the sites in /etc/default/sidekick first. An upgrade restarts a
# running service so it runs the new binary; removing the package stops and disables it, so no enablement link
# outlives the unit. deb-systemd-invoke (init-system-helpers) honours policy-rc.d, as in chroots and image builds.
cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
  if [ -n "$2" ]; then
    if command -v deb-systemd-invoke >/dev/null; then
      deb-systemd-invoke try-restart sidekick.service >/dev/null || true
    else
      systemctl try-restart sidekick.service >/dev/null || true
    fi
  fi
fi
SCRIPT
cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  if command -v deb-systemd-invoke >/dev/null; then
    deb-systemd-invoke stop sidekick.service >/dev/null || true
  fi
  systemctl disable --now sidekick.service >/dev/null 2>&1 || true
fi
SCRIPT
cat > "$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$packages/sidekick_${deb_version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null

# The container image's files: the Dockerfile's runtime stage copies this folder onto a minimal glibc image.
install -D -m 0755 "$binary" artifacts/image/usr/bin/sidekick
install -D -m 0644 LICENSE artifacts/image/usr/share/doc/sidekick/LICENSE

(cd "$packages" && sha256sum -- *.tar.gz *.deb > SHA256SUMS)
rm -rf "$stage"
say "built:"
(cd "$packages" && ls -l -- *.tar.gz *.deb SHA256SUMS | awk '{ printf "  %s  %s bytes\n", $NF, $5 }')
echo "  artifacts/image/ (the container image's files)"
