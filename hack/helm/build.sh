#!/usr/bin/env bash
# Build the helm binary the chart tests use, from the Go module proxy.
#
# The binary goes to a cache outside the repository:
#   ${MLOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/tools}/helm-<version>/helm
# If it is already there this exits immediately. The last line printed on
# stdout is always the path of the binary.
#
# Environment:
#   MLOPS_TOOLS_CACHE   cache root (default above)
#   MLOPS_HELM_JOBS     go build -p (default 2)
#   MLOPS_HELM_FORCE=1  rebuild even if the binary exists
set -euo pipefail

HELM_VERSION="v3.22.0"
# The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`):
# helm's own release builds set it from their k8s.io/client-go (v0.37.0 in v3.22.0 -> 1.37);
# a plain `go install` would leave helm's fallback of 1.20.
KUBE_MAJOR=1
KUBE_MINOR=37
CACHE_ROOT="${MLOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/tools}"
BIN_DIR="$CACHE_ROOT/helm-$HELM_VERSION"
HELM="$BIN_DIR/helm"

if [ "${MLOPS_HELM_FORCE:-0}" != 1 ] && [ -x "$HELM" ]; then
  echo "$HELM"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "hack/helm/build.sh: 'go' not found on PATH; Go >= 1.24 is needed to build helm $HELM_VERSION" >&2
  exit 1
fi

mkdir -p "$BIN_DIR"

# Serialise concurrent builds (e.g. make and pytest started together).
exec 9>"$BIN_DIR/.build.lock"
if command -v flock >/dev/null 2>&1; then
  if ! flock -w 3600 9; then
    echo "hack/helm/build.sh: timed out waiting for another build holding $BIN_DIR/.build.lock" >&2
    exit 1
  fi
  if [ "${MLOPS_HELM_FORCE:-0}" != 1 ] && [ -x "$HELM" ]; then
    echo "$HELM"
    exit 0
  fi
fi

# Install into a staging directory first, so a half-built binary never lands in the cache.
STAGE="$(mktemp -d "$BIN_DIR/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

echo "hack/helm/build.sh: building helm $HELM_VERSION into $BIN_DIR" >&2
start=$(date +%s)
# The same -X settings as helm's Makefile: its version, and the default Kubernetes version.
V=helm.sh/helm/v3/internal/version
LDFLAGS="-s -w -X $V.version=$HELM_VERSION -X $V.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  LDFLAGS+=" -X $pkg.k8sVersionMajor=$KUBE_MAJOR -X $pkg.k8sVersionMinor=$KUBE_MINOR"
done
# Run outside any module so the project's own go.mod files never interfere.
cd "$STAGE"
CGO_ENABLED=0 GOBIN="$STAGE" GOFLAGS="-buildvcs=false" go install \
  -p "${MLOPS_HELM_JOBS:-2}" \
  -trimpath \
  -ldflags "$LDFLAGS" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2

version_out="$("$STAGE/helm" version --template '{{.Version}}' 2>&1 || true)"
if [ "$version_out" != "$HELM_VERSION" ]; then
  echo "hack/helm/build.sh: unexpected 'helm version' output: $version_out" >&2
  exit 1
fi

mv -f "$STAGE/helm" "$HELM"
echo "hack/helm/build.sh: done in $(( $(date +%s) - start ))s" >&2
echo "$HELM"
