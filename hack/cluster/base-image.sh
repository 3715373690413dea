#!/usr/bin/env bash
# Make the base image of the project's Dockerfile without a registry: a
# Debian bookworm root filesystem with Debian's python3.11 (the PYTHON_IMAGE
# build argument), made by mmdebstrap from the host's own apt sources.
#
# The tarball goes to a cache outside the repository:
#   ${MLOPS_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/cluster}/base/bookworm-python3.11-<key>.tar
# where <key> hashes this script, the apt sources and the local CA
# certificates, so it is made again only when one of them changes. The last
# line printed on stdout is the tarball's path.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE=bookworm
# python3-pip and python3.11-venv: the Dockerfile's build stage runs
# `python -m pip wheel` and `python -m venv`; python-is-python3 gives `python`.
PACKAGES=python3.11,python3.11-venv,python3-pip,python-is-python3,ca-certificates

CACHE_ROOT="${MLOPS_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/cluster}"
OUT_DIR="$CACHE_ROOT/base"

# The host's apt sources (one-line or deb822 files), passed to mmdebstrap as
# they are: the base comes from the same Debian mirror the host uses.
SOURCES=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] && grep -qv '^\s*\(#\|$\)' "$f" && SOURCES+=("$f")
done
if [ "${#SOURCES[@]}" -eq 0 ]; then
  echo "base-image.sh: no apt sources found under /etc/apt" >&2
  exit 1
fi
# Certificates the host added to its trust store (e.g. of a TLS-inspecting
# proxy): pip inside the image build must trust them too.
LOCAL_CAS=()
for f in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$f" ] && LOCAL_CAS+=("$f")
done

KEY="$(cat "${BASH_SOURCE[0]}" "${SOURCES[@]}" ${LOCAL_CAS[@]+"${LOCAL_CAS[@]}"} | sha256sum | cut -c1-16)"
OUT="$OUT_DIR/$SUITE-python3.11-$KEY.tar"
if [ -s "$OUT" ]; then
  echo "$OUT"
  exit 0
fi

command -v mmdebstrap >/dev/null 2>&1 || { echo "base-image.sh: mmdebstrap is missing (bash hack/cluster/packages.sh)" >&2; exit 1; }
mkdir -p "$OUT_DIR"
exec 9>"$OUT_DIR/.build.lock"
flock -w 3600 9
if [ -s "$OUT" ]; then
  echo "$OUT"
  exit 0
fi

HOOKS=()
if [ "${#LOCAL_CAS[@]}" -gt 0 ]; then
  HOOKS+=(--customize-hook="copy-in ${LOCAL_CAS[*]} /usr/local/share/ca-certificates/")
  HOOKS+=(--customize-hook='chroot "$1" update-ca-certificates')
fi
# Smaller image: no documentation, man pages or apt lists.
HOOKS+=(--customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/var/lib/apt/lists/*')

echo "base-image.sh: making $OUT" >&2
start=$(date +%s)
TMP="$OUT.tmp.$$"
trap 'rm -f "$TMP"' EXIT
mmdebstrap --variant=minbase --include="$PACKAGES" --format=tar \
  "${HOOKS[@]}" "$SUITE" "$TMP" "${SOURCES[@]}" >&2
mv -f "$TMP" "$OUT"
# Older bases are of no use any more.
find "$OUT_DIR" -maxdepth 1 -name "$SUITE-python3.11-*.tar" ! -name "$(basename "$OUT")" -delete
echo "base-image.sh: done in $(( $(date +%s) - start ))s" >&2
echo "$OUT"
