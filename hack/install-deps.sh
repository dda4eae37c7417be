#!/usr/bin/env bash
# Installs, idempotently, every Debian package the demo and the test tiers need.
# Safe to run repeatedly: it only calls apt when something is missing.
set -euo pipefail

PACKAGES=(
  iproute2 bird2 frr iputils-arping iputils-ping ndisc6 nftables tcpdump
  keepalived haproxy wrk qemu-system-x86 busybox-static kmod cpio zstd xz-utils
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=900 -q -y)
apt-get "${apt_opts[@]}" update >/dev/null
# Services must not start on install: the lab runs its own instances in namespaces.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
