#!/usr/bin/env bash
# The VM tier: boots Debian's kernel under QEMU (TCG, no KVM needed) with an initramfs of
# busybox, the modules kernel.sh caches and a static test binary of ./integration/vm, and
# exits with the tests' status. Arguments go to the test binary, e.g.
#
#   hack/vm/run.sh -test.run 'Drain' -test.v
#
# Default: -test.v. VM_TIMEOUT (seconds, default 300) bounds the guest's whole life.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
start=$SECONDS

log() { echo "vm: $* ($((SECONDS - start)) s)" >&2; }

"$repo/hack/install-deps.sh"
kdir=$("$here/kernel.sh")
log "kernel $(cat "$kdir/kver") ready"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,dev,proc,sys,tmp,modules}
(cd "$repo" && CGO_ENABLED=0 go test -c -trimpath -o "$rootfs/vmtest" ./integration/vm)
log "test binary built"

cp /bin/busybox "$rootfs/bin/busybox"
install -m 0755 "$here/init" "$rootfs/init"
cp "$kdir"/modules/* "$rootfs/modules/"
# Uncompressed: the kernel unpacks it faster than it could decompress it under emulation.
(cd "$rootfs" && find . | cpio -o -H newc --quiet) >"$work/initramfs.cpio"

kernel="$kdir/bzImage"
[ -f "$kdir/vmlinux" ] && kernel="$kdir/vmlinux"

args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-test.v)

log "booting"
status=0
# The console (first serial port) streams the test output; SeaBIOS's banner and terminal
# escapes are dropped. The result comes on the second port, so console noise cannot fake it.
timeout "${VM_TIMEOUT:-300}" qemu-system-x86_64 \
  -accel tcg -cpu max -m 1G -smp 2 -nographic -nodefaults -nic none -no-reboot \
  -kernel "$kernel" -initrd "$work/initramfs.cpio" \
  -append "console=ttyS0 quiet panic=-1 oops=panic cryptomgr.notests -- ${args[*]}" \
  -serial stdio -serial "file:$work/result" </dev/null |
  sed -u -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' -e '/^SeaBIOS /d' -e 's/^Booting from ROM\.\.//' || status=$?

result=$(tr -d '\r' <"$work/result" 2>/dev/null || true)
log "guest says: ${result:-nothing}"

case "$result" in
  "PASS rc=0") exit 0 ;;
  "FAIL rc="*) exit "${result#FAIL rc=}" ;;
  FAIL*) exit 1 ;;
esac
if [ "$status" -eq 124 ]; then
  echo "vm: the guest did not finish within ${VM_TIMEOUT:-300} s" >&2
else
  echo "vm: the guest gave no result (qemu exit $status): kernel panic or crash, see above" >&2
fi
exit 1
