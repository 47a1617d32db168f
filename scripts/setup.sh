#!/usr/bin/env bash
# Idempotent host preparation for oxlet on Debian 12, as root: installs the OS packages the
# project and its tests need, and nothing else. Fast when everything is present.
set -euo pipefail

PACKAGES=(
  containerd runc containernetworking-plugins
  nftables iptables conntrack iproute2
  protobuf-compiler libprotobuf-dev
  docker-registry skopeo umoci busybox-static
  etcd-server etcd-client
  curl gcc libc6-dev
)

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: must run as root (installs packages; tests create network namespaces)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi

# Debian's packages start no service on these machines, but on a host with systemd they may:
# oxlet runs private instances with their own config and never uses the system ones.
for tool in containerd runc docker-registry skopeo etcd nft iptables protoc gcc; do
  command -v "$tool" >/dev/null || { echo "setup: $tool missing after install" >&2; exit 1; }
done
[[ -x /usr/lib/cni/bridge ]] || { echo "setup: /usr/lib/cni/bridge missing" >&2; exit 1; }
# The official Kubernetes Python client, for the API server's client-compatibility test.
if ! python3 -c "import kubernetes" 2>/dev/null; then
  echo "setup: installing the kubernetes Python client"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes
fi
command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }
