# Shared by hack/envtest/build.sh and hack/cluster/build.sh (sourced, not run):
# build commands of a Kubernetes release from a wrapper module (go.mod pins the
# release, cmd/<name>/main.go calls its command) with the release's version
# stamped in, the way the release's own build does.

# kube_version MODULE_DIR: the k8s.io/kubernetes version the module pins.
kube_version() {
  awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$1/go.mod"
}

# kube_require_go MODULE_DIR: fail with the Go version needed when go is missing.
kube_require_go() {
  command -v go >/dev/null 2>&1 && return 0
  echo "build.sh: 'go' not found on PATH; Go >= $(awk '$1 == "go" {print $2; exit}' "$1/go.mod") is needed" >&2
  return 1
}

# kube_lock BIN_DIR: serialise builds into BIN_DIR (make and pytest may start one together), on fd 9.
kube_lock() {
  mkdir -p "$1"
  exec 9>"$1/.build.lock"
  if ! flock -w 3600 9; then
    echo "build.sh: timed out waiting for another build holding $1/.build.lock" >&2
    return 1
  fi
}

# kube_build MODULE_DIR BIN_DIR JOBS NAME...: go build ./cmd/NAME for each NAME,
# check that each kube-* binary reports the pinned version, then move them all
# into BIN_DIR. Niced: the machines that run the tests are small.
kube_build() {
  local dir="$1" bin_dir="$2" jobs="$3"
  shift 3
  local version stage build_date ldflags v=k8s.io/component-base/version name out start
  version="$(kube_version "$dir")"
  local mm="${version#v}"
  local major="${mm%%.*}" minor="${mm#*.}"
  minor="${minor%%.*}"
  # The release date of the module, so that /version is the same on every build.
  build_date="$(cd "$dir" && go list -mod=readonly -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes 2>/dev/null || true)"
  ldflags="-s -w -X $v.gitVersion=$version -X $v.gitMajor=$major -X $v.gitMinor=$minor"
  ldflags+=" -X $v.gitTreeState=clean -X $v.buildDate=${build_date:-1970-01-01T00:00:00Z}"

  stage="$(mktemp -d "$bin_dir/.stage.XXXXXX")"
  local pkgs=()
  for name in "$@"; do pkgs+=("./cmd/$name"); done
  echo "build.sh: building $* $version into $bin_dir" >&2
  start=$(date +%s)
  # The same flags everywhere, so packages two builds share come from Go's build cache.
  if ! (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -p "$jobs" -trimpath \
        -ldflags "$ldflags" -o "$stage/" "${pkgs[@]}" >&2); then
    rm -rf "$stage"
    return 1
  fi
  for name in "$@"; do
    [[ "$name" == kube* ]] || continue
    out="$("$stage/$name" --version 2>&1 || true)"
    if [ "$out" != "Kubernetes $version" ]; then
      echo "build.sh: unexpected '$name --version' output: $out" >&2
      rm -rf "$stage"
      return 1
    fi
  done
  for name in "$@"; do mv -f "$stage/$name" "$bin_dir/$name"; done
  rm -rf "$stage"
  echo "build.sh: done in $(( $(date +%s) - start ))s" >&2
}
