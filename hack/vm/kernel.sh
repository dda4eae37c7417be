#!/usr/bin/env bash
# Prints the directory holding a Debian kernel and the modules the VM tier loads, fetching
# them on first use:
#
#   <dir>/vmlinux        uncompressed kernel, booted directly (PVH): saves seconds of
#                        emulated decompression. Absent when the kernel cannot boot that way.
#   <dir>/bzImage        the packaged kernel, the fallback.
#   <dir>/modules/*.ko   the modules below and their dependencies.
#   <dir>/modules/order  their file names, in load order.
#
# The kernel is the one the current linux-image-amd64 depends on, resolved at each run (old
# ABIs leave the mirror). The package is downloaded, never installed: installing it would
# rebuild the host's initramfs for minutes. Cached under
# ${XDG_CACHE_HOME:-~/.cache}/talos-lb/vm/<abi>; other ABIs are pruned once a new one is in.
set -euo pipefail

# What the guest needs: conntrack and NAT with nftables masquerade, IPVS with the schedulers
# Talos builds (lc left out, so a test can see a scheduler module missing), dummy for the
# VIP and veth for the namespaces.
MODULES=(
  crc32c_generic nf_conntrack nf_nat nf_tables nft_ct nft_masq nft_chain_nat
  ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh ip_vs_mh dummy veth
)

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/talos-lb/vm"
# The sandbox user (_apt) cannot write into a root-owned temporary directory.
apt_opts=(-q -o DPkg::Lock::Timeout=900 -o APT::Sandbox::User=root)

log() { echo "vm-kernel: $*" >&2; }

apt_update() {
  if [ "$(id -u)" -ne 0 ]; then
    log "package lists look stale and only root can run apt-get update"
    return 1
  fi
  log "apt-get update"
  apt-get "${apt_opts[@]}" update >&2
}

# The versioned image package linux-image-amd64 currently depends on.
resolve() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }'
}

newest_cached() {
  local d
  d=$(ls -1dt "$cache_root"/*/.complete 2>/dev/null | head -n1) || true
  [ -n "$d" ] && dirname "$d"
}

pkg=$(resolve)
if [ -z "$pkg" ]; then
  apt_update || true
  pkg=$(resolve)
fi
if [ -z "$pkg" ]; then
  if dir=$(newest_cached); then
    log "cannot resolve linux-image-amd64; using the cached $dir"
    echo "$dir"
    exit 0
  fi
  log "cannot resolve linux-image-amd64 (no package lists?)"
  exit 1
fi

abi=${pkg#linux-image-}
abi=${abi%-amd64}
dir="$cache_root/$abi"
if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi

log "preparing $pkg (first run for this kernel)"
mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if ! (cd "$tmp" && apt-get "${apt_opts[@]}" download "$pkg" >&2); then
  apt_update
  (cd "$tmp" && apt-get "${apt_opts[@]}" download "$pkg" >&2)
fi

dpkg-deb -x "$tmp"/*.deb "$tmp/root"
kver=$(ls "$tmp/root/lib/modules")
# The package ships no modules.dep: modprobe needs one to resolve dependencies.
depmod -b "$tmp/root" "$kver"

out="$tmp/out"
mkdir -p "$out/modules"
: >"$out/modules/order"
for m in "${MODULES[@]}"; do
  # One module per call: --show-depends prints its dependencies first, then itself.
  modprobe -C /dev/null -d "$tmp/root" -S "$kver" --show-depends "$m" |
    while read -r kind path _; do
      [ "$kind" = insmod ] || continue # "builtin ..." needs nothing
      name=$(basename "$path")
      case "$name" in
        *.ko.xz) name=${name%.xz}; xz -dc "$path" >"$out/modules/$name" ;;
        *.ko.zst) name=${name%.zst}; zstd -qdc "$path" >"$out/modules/$name" ;;
        *.ko.gz) name=${name%.gz}; gzip -dc "$path" >"$out/modules/$name" ;;
        *) cp "$path" "$out/modules/$name" ;;
      esac
      grep -qxF "$name" "$out/modules/order" || echo "$name" >>"$out/modules/order"
    done
done
for m in "${MODULES[@]}"; do
  grep -q "^${m//_/[_-]}\.ko$" "$out/modules/order" || { log "module $m not found in $pkg"; exit 1; }
done

bz="$tmp/root/boot/vmlinuz-$kver"
cp "$bz" "$out/bzImage"
echo "$kver" >"$out/kver"

# QEMU boots an ELF vmlinux through its PVH entry point. Find the compressed payload in
# the bzImage by its magic and unpack it; the decompressor complains about the trailing
# bytes after the payload, hence the ELF check instead of its exit status.
if grep -q '^CONFIG_PVH=y' "$tmp/root/boot/config-$kver"; then
  for magic in '\xfd\x37\x7a\x58\x5a\x00:xz' '\x28\xb5\x2f\xfd:zstd' '\x1f\x8b\x08\x00:gzip'; do
    tool=${magic##*:}
    for off in $(LC_ALL=C grep -obUaP "${magic%:*}" "$bz" | cut -d: -f1); do
      tail -c +$((off + 1)) "$bz" | "$tool" -dc >"$out/vmlinux" 2>/dev/null || true
      if [ "$(head -c 4 "$out/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then
        break 2
      fi
    done
  done
  if [ "$(head -c 4 "$out/vmlinux" 2>/dev/null | od -An -c | tr -d ' ')" != '177ELF' ]; then
    log "could not extract vmlinux; booting the bzImage (slower)"
    rm -f "$out/vmlinux"
  fi
fi

touch "$out/.complete"
if ! mv -T "$out" "$dir" 2>/dev/null; then
  # Another run won the race; its copy is as good as ours.
  [ -f "$dir/.complete" ] || { log "cannot move the kernel into $dir"; exit 1; }
fi
for old in "$cache_root"/*/; do
  [ "${old%/}" = "$dir" ] || rm -rf "$old"
done
log "cached $kver in $dir"
echo "$dir"
