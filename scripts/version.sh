#!/usr/bin/env bash
# Prints sidekick's version as git says it, for scripts/package.sh and anyone who needs the same answer:
#   HEAD tagged vX.Y.Z (or vX.Y.Z-PRE)   X.Y.Z (X.Y.Z-PRE)
#   any other commit                     0.0.0-g<short commit>
# and, when tracked files have uncommitted changes, "-dirty" (".dirty" after a pre-release part), so a build
# of changed sources never carries a release's number. Options:
#   --debian   the same for dpkg: every '-' becomes '~', so 1.2.3~rc.1 and 1.2.3~dirty sort before 1.2.3
#   --commit   the full commit id ("unknown" outside git)
# Outside a git checkout (a source archive) SIDEKICK_VERSION and SIDEKICK_COMMIT give the answer; without them
# the version is 0.0.0-dev, as a plain `dotnet build` says.
set -euo pipefail
cd "$(dirname "$0")/.."

form=plain
case "${1:-}" in
  "") ;;
  --debian) form=debian ;;
  --commit) form=commit ;;
  *) echo "version.sh: unknown option '$1': use --debian, --commit or nothing" >&2; exit 2 ;;
esac

# What a version may look like: numbers, then an optional pre-release of letters, digits, dots and dashes.
# Nothing else may reach a package name or a Debian version, and '+' is the SDK's separator before the commit.
semver='^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$'

if [ -n "${SIDEKICK_VERSION:-}" ]; then
  version=$SIDEKICK_VERSION
  if ! [[ $version =~ $semver ]]; then
    echo "version.sh: invalid SIDEKICK_VERSION '$version': use X.Y.Z or X.Y.Z-PRE (e.g. 1.2.3, 1.2.3-rc.1)" >&2
    exit 2
  fi
  commit=${SIDEKICK_COMMIT:-unknown}
elif command -v git >/dev/null && git rev-parse --verify --quiet HEAD >/dev/null 2>&1; then
  commit=$(git rev-parse HEAD)
  version=
  # The highest of HEAD's release tags, if any. Sorted with '~' for '-' as dpkg would (sort -V puts '~' first),
  # so v1.2.3 ranks above v1.2.3-rc.1.
  for tag in $(git tag --points-at HEAD --list 'v[0-9]*' | sed 's/^\(.*\)$/\1 \1/; s/-/~/' | sort -V -r -k1,1 | cut -d' ' -f2); do
    if [[ ${tag#v} =~ $semver ]]; then
      version=${tag#v}
      break
    fi
  done
  if [ -z "$version" ]; then
    version=0.0.0-g$(git rev-parse --short=7 HEAD)
  fi
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    if [[ $version == *-* ]]; then version+=.dirty; else version+=-dirty; fi
  fi
else
  echo "version.sh: not a git checkout and SIDEKICK_VERSION is not set: the version is 0.0.0-dev" >&2
  version=0.0.0-dev
  commit=${SIDEKICK_COMMIT:-unknown}
fi

case $form in
  plain) echo "$version" ;;
  debian) echo "${version//-/\~}" ;;
  commit) echo "$commit" ;;
esac
