#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and etcd for the integration
# tests from the Go module proxy (see docs/development.md).
#
# Binaries go to a cache outside the repository:
#   ${MLOPS_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/envtest}/<k8s-version>/
# If all three are already there this exits immediately. The last line printed
# on stdout is always the bin directory.
#
# Environment:
#   MLOPS_ENVTEST_CACHE   cache root (default above)
#   MLOPS_ENVTEST_JOBS    go build -p (default 2)
#   MLOPS_ENVTEST_FORCE=1 rebuild even if the binaries exist
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BINARIES=(kube-apiserver kube-controller-manager etcd)

# Versions come from the checked-in go.mod so they cannot drift apart.
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$HERE/go.mod")"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$HERE/go.mod")"
if [ -z "$K8S_VERSION" ] || [ -z "$ETCD_VERSION" ]; then
  echo "build.sh: cannot read versions from $HERE/go.mod" >&2
  exit 1
fi

CACHE_ROOT="${MLOPS_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/envtest}"
BIN_DIR="$CACHE_ROOT/$K8S_VERSION"

have_all() {
  local b
  for b in "${BINARIES[@]}"; do
    [ -x "$BIN_DIR/$b" ] || return 1
  done
}

if [ "${MLOPS_ENVTEST_FORCE:-0}" != 1 ] && have_all; then
  echo "$BIN_DIR"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: 'go' not found on PATH; Go >= $(awk '$1 == "go" {print $2; exit}' "$HERE/go.mod") is needed" >&2
  exit 1
fi

mkdir -p "$BIN_DIR"

# Serialise concurrent builds (e.g. make and pytest started together).
exec 9>"$BIN_DIR/.build.lock"
if command -v flock >/dev/null 2>&1; then
  if ! flock -w 3600 9; then
    echo "build.sh: timed out waiting for another build holding $BIN_DIR/.build.lock" >&2
    exit 1
  fi
  # Another process may have finished the build while we waited.
  if [ "${MLOPS_ENVTEST_FORCE:-0}" != 1 ] && have_all; then
    echo "$BIN_DIR"
    exit 0
  fi
fi

K8S_MM="${K8S_VERSION#v}"
K8S_MAJOR="${K8S_MM%%.*}"
K8S_MINOR="${K8S_MM#*.}"
K8S_MINOR="${K8S_MINOR%%.*}"

cd "$HERE"
# The release date of the module, so that /version is the same on every build.
BUILD_DATE="$(go list -mod=readonly -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes 2>/dev/null || true)"
BUILD_DATE="${BUILD_DATE:-1970-01-01T00:00:00Z}"

V=k8s.io/component-base/version
LDFLAGS="-s -w"
LDFLAGS+=" -X $V.gitVersion=$K8S_VERSION"
LDFLAGS+=" -X $V.gitMajor=$K8S_MAJOR"
LDFLAGS+=" -X $V.gitMinor=$K8S_MINOR"
LDFLAGS+=" -X $V.gitTreeState=clean"
LDFLAGS+=" -X $V.buildDate=$BUILD_DATE"

STAGE="$(mktemp -d "$BIN_DIR/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

echo "build.sh: building kube-apiserver, kube-controller-manager $K8S_VERSION and etcd $ETCD_VERSION into $BIN_DIR" >&2
start=$(date +%s)
CGO_ENABLED=0 GOFLAGS=-mod=readonly go build \
  -p "${MLOPS_ENVTEST_JOBS:-2}" \
  -trimpath \
  -ldflags "$LDFLAGS" \
  -o "$STAGE/" \
  ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/etcd >&2

# Sanity check before publishing the binaries into the cache.
version_out="$("$STAGE/kube-apiserver" --version 2>&1 || true)"
if [ "$version_out" != "Kubernetes $K8S_VERSION" ]; then
  echo "build.sh: unexpected 'kube-apiserver --version' output: $version_out" >&2
  exit 1
fi

for b in "${BINARIES[@]}"; do
  mv -f "$STAGE/$b" "$BIN_DIR/$b"
done
echo "build.sh: done in $(( $(date +%s) - start ))s" >&2
echo "$BIN_DIR"
