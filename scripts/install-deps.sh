#!/usr/bin/env bash
# Installs the Debian 12 packages needed to build, test and demo hostlb.
# Idempotent; run as root.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
build_pkgs=(
  build-essential cmake pkg-config git clang-format clang clang-tidy
  libnftables-dev libnftnl-dev libnetfilter-conntrack-dev libmnl-dev
  libnl-3-dev libnl-route-3-dev libbpf-dev bpftool llvm
  libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libsystemd-dev
  libcurl4-openssl-dev libgtest-dev libgmock-dev
)
runtime_pkgs=(etcd-server etcd-client openssl nftables conntrack iproute2 socat procps kmod iputils-ping man-db passwd util-linux systemd)
package_pkgs=(dpkg-dev fakeroot debootstrap)
missing=()
for p in "${build_pkgs[@]}" "${runtime_pkgs[@]}" "${package_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
