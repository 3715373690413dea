#!/usr/bin/env bash
# Fetch what the chart tests need to check the chart's monitoring objects:
#   - promqlcheck: Prometheus' own PromQL parser (./promqlcheck, built from
#     the Go module proxy at the version in ./go.mod), for the alert rules and
#     the Grafana dashboard's queries;
#   - promtool, of the same Prometheus version: `check rules` and the alert
#     rules' unit tests (`test rules`);
#   - the ServiceMonitor and PrometheusRule CRDs of the Prometheus Operator
#     (from its Go module), so the API server can validate those objects.
#
# Both go to a cache outside the repository:
#   ${MLOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/tools}/monitoring-<hash>/
# (<hash> covers this script, go.mod, go.sum and promqlcheck's source, so a
# change to any of them builds afresh).
# If it is complete this exits immediately. The last line printed on stdout is
# always that directory.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROM_OPERATOR_VERSION="v0.88.0"
PROM_VERSION="$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3; exit}' "$HERE/go.mod")"
if [ -z "$PROM_VERSION" ]; then
  echo "hack/monitoring/build.sh: cannot read the prometheus version from $HERE/go.mod" >&2
  exit 1
fi
CACHE_ROOT="${MLOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/tools}"
HASH="$(cat "$HERE/build.sh" "$HERE/go.mod" "$HERE/go.sum" "$HERE/promqlcheck/main.go" "$HERE/tools/tools.go" | sha256sum | cut -c1-12)"
OUT="$CACHE_ROOT/monitoring-$HASH"
CRDS=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)

complete() {
  [ -x "$OUT/promqlcheck" ] && [ -x "$OUT/promtool" ] || return 1
  local f
  for f in "${CRDS[@]}"; do [ -s "$OUT/crds/$f" ] || return 1; done
}
if complete; then
  echo "$OUT"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "hack/monitoring/build.sh: 'go' not found on PATH" >&2
  exit 1
fi
mkdir -p "$OUT"
exec 9>"$OUT/.build.lock"
if command -v flock >/dev/null 2>&1; then
  flock -w 1800 9 || { echo "hack/monitoring/build.sh: timed out waiting for $OUT/.build.lock" >&2; exit 1; }
  if complete; then
    echo "$OUT"
    exit 0
  fi
fi
STAGE="$(mktemp -d "$OUT/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
start=$(date +%s)

echo "hack/monitoring/build.sh: building promqlcheck and promtool (prometheus $PROM_VERSION; several minutes cold)" >&2
# remove_all_sd: Prometheus' own build tag that leaves out the cloud service-discovery plugins (their SDKs are
# about a fifth of promtool's packages); the rule checks and rule unit tests do not use them.
(cd "$HERE" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -p "${MLOPS_MONITORING_JOBS:-2}" -tags remove_all_sd \
  -trimpath -ldflags "-s -w" -o "$STAGE/" ./promqlcheck github.com/prometheus/prometheus/cmd/promtool) >&2
"$STAGE/promtool" --version >/dev/null

echo "hack/monitoring/build.sh: fetching the Prometheus Operator $PROM_OPERATOR_VERSION CRDs" >&2
# Outside any module: only the module's zip is downloaded (checked against the Go checksum database).
dir="$(cd "$STAGE" && GOFLAGS=-mod=mod go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" \
  | awk -F'"' '$2 == "Dir" {print $4}')"
mkdir -p "$STAGE/crds"
for f in "${CRDS[@]}"; do
  cp "$dir/example/prometheus-operator-crd/$f" "$STAGE/crds/$f"
  chmod u+w "$STAGE/crds/$f"
done

mkdir -p "$OUT/crds"
for f in "${CRDS[@]}"; do mv -f "$STAGE/crds/$f" "$OUT/crds/$f"; done
mv -f "$STAGE/promqlcheck" "$OUT/promqlcheck"
mv -f "$STAGE/promtool" "$OUT/promtool"
echo "hack/monitoring/build.sh: done in $(( $(date +%s) - start ))s" >&2
echo "$OUT"
