#!/usr/bin/env bash
# Build the project's image from its Dockerfile on this machine, without a
# registry or a Docker daemon, for the one-node test cluster:
#   1. the base (hack/cluster/base-image.sh) imported into podman as the
#      PYTHON_IMAGE build argument;
#   2. `podman build --isolation chroot` of the Dockerfile with the `dask`
#      extra (EXTRAS=dask): one image for every role on the cluster, the
#      DaskJobs' runner, scheduler and workers included;
#   3. a "pause" image for the pods' sandboxes: the same base whose entrypoint
#      waits for SIGTERM;
#   4. both saved as OCI archives, ready for `ctr images import`.
#
# Archives go to a cache outside the repository:
#   ${MLOPS_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/cluster}/image/
# named after a hash of everything the build reads (the build context, the
# Dockerfile and the base), so an unchanged tree reuses them. Prints two
# lines, "<role> <image reference> <archive>", for role operator and pause.
#
# Environment:
#   MLOPS_CLUSTER_CACHE    cache root (default above)
#   MLOPS_CLUSTER_FORCE=1  rebuild even if the archives exist
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE_ROOT="${MLOPS_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator/cluster}"
OUT_DIR="$CACHE_ROOT/image"

command -v podman >/dev/null 2>&1 || { echo "image.sh: podman is missing (bash hack/cluster/packages.sh)" >&2; exit 1; }

BASE_TAR="$(bash "$HERE/base-image.sh" | tail -n1)"
BASE_KEY="$(basename "$BASE_TAR" .tar)"
BASE_KEY="${BASE_KEY##*-}"
BASE_REF="localhost/mlops-python-base:$BASE_KEY"
# The distributed-training test's Dask pods need the extra; the other roles do not mind it.
EXTRAS=dask

# The build context as .dockerignore admits it, plus the Dockerfile itself.
context_key() {
  cd "$ROOT"
  {
    echo "$BASE_KEY"
    cat "$HERE/image.sh" Dockerfile .dockerignore
    find pyproject.toml README.md operator hack/image/constraints.txt -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}
KEY="$(context_key)"
OPERATOR_REF="localhost/mlops-operator:test-$KEY"
PAUSE_REF="localhost/mlops-pause:$BASE_KEY"
OPERATOR_TAR="$OUT_DIR/mlops-operator-$KEY.oci.tar"
PAUSE_TAR="$OUT_DIR/mlops-pause-$BASE_KEY.oci.tar"

report() {
  echo "operator $OPERATOR_REF $OPERATOR_TAR"
  echo "pause $PAUSE_REF $PAUSE_TAR"
}

fresh() {
  [ "${MLOPS_CLUSTER_FORCE:-0}" != 1 ] && [ -s "$OPERATOR_TAR" ] && [ -s "$PAUSE_TAR" ]
}
# The archives are the cache; podman's own store may have been emptied since.
load_missing() {
  podman image exists "$OPERATOR_REF" || podman load -q -i "$OPERATOR_TAR" >&2
  podman image exists "$PAUSE_REF" || podman load -q -i "$PAUSE_TAR" >&2
}
if fresh; then load_missing; report; exit 0; fi

mkdir -p "$OUT_DIR"
exec 9>"$OUT_DIR/.build.lock"
flock -w 3600 9
if fresh; then load_missing; report; exit 0; fi

start=$(date +%s)
if ! podman image exists "$BASE_REF"; then
  podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$BASE_TAR" "$BASE_REF" >&2
fi

echo "image.sh: building $OPERATOR_REF" >&2
podman build --isolation chroot --pull=never \
  --build-arg "PYTHON_IMAGE=$BASE_REF" --build-arg "EXTRAS=$EXTRAS" \
  -t "$OPERATOR_REF" -f "$ROOT/Dockerfile" "$ROOT" >&2

# The sandbox ("pause") container only holds the pod's namespaces; PID 1
# must end on SIGTERM, which a plain `sleep` as PID 1 ignores.
podman build --isolation chroot --pull=never -t "$PAUSE_REF" -f - "$ROOT/hack/cluster" >&2 <<CONTAINERFILE
FROM $BASE_REF
ENTRYPOINT ["python3", "-c", "import signal; signal.sigwait({signal.SIGTERM, signal.SIGINT})"]
CONTAINERFILE

for pair in "$OPERATOR_REF $OPERATOR_TAR" "$PAUSE_REF $PAUSE_TAR"; do
  set -- $pair
  rm -f "$2.tmp"
  podman save --format oci-archive -o "$2.tmp" "$1" >&2
  mv -f "$2.tmp" "$2"
done
# Archives of older trees are of no use any more.
find "$OUT_DIR" -maxdepth 1 -name 'mlops-*.oci.tar' ! -name "$(basename "$OPERATOR_TAR")" ! -name "$(basename "$PAUSE_TAR")" -delete
podman images --format '{{.Repository}}:{{.Tag}}' \
  | grep -E '^localhost/mlops-(operator:test|pause|python-base):' \
  | grep -vxF -e "$OPERATOR_REF" -e "$PAUSE_REF" -e "$BASE_REF" \
  | xargs -r podman rmi >&2 || true
echo "image.sh: done in $(( $(date +%s) - start ))s" >&2
report
