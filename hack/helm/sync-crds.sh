#!/usr/bin/env bash
# Copy the generated CRDs (crds/*.yaml) into the chart, which cannot read
# files outside its own folder; the chart's templates/crds/ read these copies.
#
#   bash hack/helm/sync-crds.sh           copy
#   bash hack/helm/sync-crds.sh --check   exit 1 when the copies differ from crds/
#
# The chart tests (tests/chart) fail when the copies are stale.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/crds"
DST="$ROOT/charts/mlops-operator/files/crds"
CHECK=0
case "${1:-}" in
  "") ;;
  --check) CHECK=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

shopt -s nullglob
sources=("$SRC"/*.yaml)
if [ ${#sources[@]} -eq 0 ]; then
  echo "sync-crds.sh: no CRDs in crds/ (run \`mlops-operator crds\`)" >&2
  exit 1
fi

stale=()
for src in "${sources[@]}"; do
  name="$(basename "$src")"
  if ! cmp -s "$src" "$DST/$name"; then
    stale+=("$name")
  fi
done
for dst in "$DST"/*.yaml; do
  name="$(basename "$dst")"
  [ -e "$SRC/$name" ] || stale+=("$name (no longer in crds/)")
done

if [ "$CHECK" = 1 ]; then
  if [ ${#stale[@]} -gt 0 ]; then
    echo "sync-crds.sh: the chart's CRD copies are out of date: ${stale[*]} (run bash hack/helm/sync-crds.sh)" >&2
    exit 1
  fi
  exit 0
fi

mkdir -p "$DST"
rm -f "$DST"/*.yaml
cp "${sources[@]}" "$DST/"
echo "sync-crds.sh: copied ${#sources[@]} CRD(s) into charts/mlops-operator/files/crds/"
