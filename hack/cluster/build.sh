#!/usr/bin/env bash
# Build kubelet, kube-scheduler and kube-proxy for the one-node test cluster
# (tests/cluster) from the Go module proxy, the same way hack/envtest/build.sh
# builds the control plane (see docs/development.md).
#
# Binaries go to a cache outside the repository:
#   ${MLOPS_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/cluster}/bin/<k8s-version>/
# They are rebuilt only when missing or when their inputs (go.mod, go.sum,
# cmd/) changed; a warm run exits at once. The last line printed on stdout is
# always the bin directory.
#
# Environment:
#   MLOPS_CLUSTER_CACHE    cache root (default above)
#   MLOPS_CLUSTER_JOBS     go build -p (default 2)
#   MLOPS_CLUSTER_FORCE=1  rebuild even if the binaries are up to date
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BINARIES=(kubelet kube-scheduler kube-proxy)

K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$HERE/go.mod")"
if [ -z "$K8S_VERSION" ]; then
  echo "build.sh: cannot read the Kubernetes version from $HERE/go.mod" >&2
  exit 1
fi

CACHE_ROOT="${MLOPS_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/cluster}"
BIN_DIR="$CACHE_ROOT/bin/$K8S_VERSION"
# What the binaries are made from: a change to any of these rebuilds them.
INPUTS_KEY="$(cd "$HERE" && cat go.mod go.sum cmd/*/main.go | sha256sum | cut -d' ' -f1)"

up_to_date() {
  local b
  for b in "${BINARIES[@]}"; do
    [ -x "$BIN_DIR/$b" ] || return 1
  done
  [ "$(cat "$BIN_DIR/.inputs" 2>/dev/null)" = "$INPUTS_KEY" ]
}

if [ "${MLOPS_CLUSTER_FORCE:-0}" != 1 ] && up_to_date; then
  echo "$BIN_DIR"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: 'go' not found on PATH; Go >= $(awk '$1 == "go" {print $2; exit}' "$HERE/go.mod") is needed" >&2
  exit 1
fi

mkdir -p "$BIN_DIR"
exec 9>"$BIN_DIR/.build.lock"
if ! flock -w 3600 9; then
  echo "build.sh: timed out waiting for another build holding $BIN_DIR/.build.lock" >&2
  exit 1
fi
if [ "${MLOPS_CLUSTER_FORCE:-0}" != 1 ] && up_to_date; then
  echo "$BIN_DIR"
  exit 0
fi

K8S_MM="${K8S_VERSION#v}"
K8S_MAJOR="${K8S_MM%%.*}"
K8S_MINOR="${K8S_MM#*.}"
K8S_MINOR="${K8S_MINOR%%.*}"

cd "$HERE"
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

echo "build.sh: building ${BINARIES[*]} $K8S_VERSION into $BIN_DIR" >&2
start=$(date +%s)
# Same flags as hack/envtest/build.sh, so the packages both share come from
# Go's build cache; nice because the machines running the tests are small.
CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build \
  -p "${MLOPS_CLUSTER_JOBS:-2}" \
  -trimpath \
  -ldflags "$LDFLAGS" \
  -o "$STAGE/" \
  ./cmd/kubelet ./cmd/kube-scheduler ./cmd/kube-proxy >&2

for b in "${BINARIES[@]}"; do
  version_out="$("$STAGE/$b" --version 2>&1 || true)"
  if [ "$version_out" != "Kubernetes $K8S_VERSION" ]; then
    echo "build.sh: unexpected '$b --version' output: $version_out" >&2
    exit 1
  fi
done

for b in "${BINARIES[@]}"; do
  mv -f "$STAGE/$b" "$BIN_DIR/$b"
done
echo "$INPUTS_KEY" > "$BIN_DIR/.inputs"
echo "build.sh: done in $(( $(date +%s) - start ))s" >&2
echo "$BIN_DIR"
