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

# shellcheck source=../lib/kube-build.sh
source "$HERE/../lib/kube-build.sh"

# The version comes from the checked-in go.mod, so the binaries cannot drift from it.
K8S_VERSION="$(kube_version "$HERE")"
if [ -z "$K8S_VERSION" ]; then
  echo "build.sh: cannot read the Kubernetes version from $HERE/go.mod" >&2
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
kube_require_go "$HERE"
kube_lock "$BIN_DIR"
# Another process may have finished the build while we waited.
if [ "${MLOPS_ENVTEST_FORCE:-0}" != 1 ] && have_all; then
  echo "$BIN_DIR"
  exit 0
fi
kube_build "$HERE" "$BIN_DIR" "${MLOPS_ENVTEST_JOBS:-2}" "${BINARIES[@]}"
echo "$BIN_DIR"
