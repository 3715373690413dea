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

# shellcheck source=../lib/kube-build.sh
source "$HERE/../lib/kube-build.sh"

K8S_VERSION="$(kube_version "$HERE")"
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
kube_require_go "$HERE"
kube_lock "$BIN_DIR"
if [ "${MLOPS_CLUSTER_FORCE:-0}" != 1 ] && up_to_date; then
  echo "$BIN_DIR"
  exit 0
fi
kube_build "$HERE" "$BIN_DIR" "${MLOPS_CLUSTER_JOBS:-2}" "${BINARIES[@]}"
echo "$INPUTS_KEY" > "$BIN_DIR/.inputs"
echo "$BIN_DIR"
