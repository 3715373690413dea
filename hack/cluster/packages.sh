#!/usr/bin/env bash
# Install the Debian packages the one-node test cluster needs, if any is
# missing: the container runtime (containerd + runc), the CNI plugins, iptables
# (kube-proxy and the kubelet program it) and nftables (the tests remove the
# empty tables iptables-nft leaves behind), podman (builds and saves the image)
# and mmdebstrap (makes the base image's root filesystem). Needs root and apt;
# a machine that has them all returns at once.
set -euo pipefail

# command or file -> the package that provides it
declare -A NEEDS=(
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [iptables]=iptables
  [nft]=nftables
  [podman]=podman
  [mmdebstrap]=mmdebstrap
)

missing=()
for what in "${!NEEDS[@]}"; do
  case "$what" in
    /*) [ -e "$what" ] && continue ;;
    *) command -v "$what" >/dev/null 2>&1 && continue ;;
  esac
  missing+=("${NEEDS[$what]}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "packages.sh: missing ${missing[*]}; install them with your package manager (root and apt-get are needed to do it here)" >&2
  exit 1
fi
echo "packages.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
