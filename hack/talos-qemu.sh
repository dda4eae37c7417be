#!/usr/bin/env bash
# The talos tier, for a Linux workstation with KVM, Docker and talosctl (not
# the build machines: they have neither KVM nor a Docker engine, so this is
# out of `make test`). It builds the extension image, serves it from a local
# registry, has Talos's imager make an ISO and an installer with it, creates a
# QEMU cluster of 3 control-plane nodes and 1 worker with talos-lb holding the
# control-plane VIP, and runs the Go tests in integration/talos against it.
#
#   IMAGER_IMAGE=<imager image of your talosctl's version> hack/talos-qemu.sh
#   hack/talos-qemu.sh destroy
#
# IMAGER_IMAGE is Talos's imager for the same release as talosctl (the
# "imager" image of the Talos release notes, tag = talosctl's version).
# Optional: VIP (10.5.0.100), VIP_LINK (eth0: check `talosctl get links`),
# REGISTRY_PORT (5005), KEEP=1 to leave the cluster running after the tests.
# Runs talosctl with sudo -E (the QEMU provisioner needs root).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/_out/talos
cluster=dev
cidr=10.5.0.0/24
gateway=10.5.0.1
vip=${VIP:-10.5.0.100}
link=${VIP_LINK:-eth0}
port=${REGISTRY_PORT:-5005}
registry_name=talos-lb-registry
control_plane=10.5.0.2,10.5.0.3,10.5.0.4
start=$SECONDS

log() { echo "talos-qemu: $* ($((SECONDS - start)) s)" >&2; }

destroy() {
	sudo -E talosctl cluster destroy --name "$cluster" --provisioner qemu || true
	docker rm -f "$registry_name" >/dev/null 2>&1 || true
}

if [ "${1:-}" = destroy ]; then
	destroy
	exit 0
fi

: "${IMAGER_IMAGE:?set IMAGER_IMAGE to the imager image of your talosctl release}"
[ -w /dev/kvm ] || { echo "talos-qemu: /dev/kvm is not usable: the QEMU provisioner needs KVM" >&2; exit 1; }
for tool in docker talosctl go make; do
	command -v "$tool" >/dev/null || { echo "talos-qemu: $tool not found" >&2; exit 1; }
done

version=$(cd "$repo" && git describe --tags --always --dirty)
mkdir -p "$out"

# 1. The extension image, built without Docker, pushed to a registry on this
#    machine. Inside the VMs the registry is the bridge's gateway address.
(cd "$repo" && make images _out/lbctl VERSION="$version" >/dev/null)
log "extension image built ($version)"

if ! docker inspect "$registry_name" >/dev/null 2>&1; then
	docker run -d --name "$registry_name" -p "$port:5000" registry:2 >/dev/null
fi

# push_tarball FILE REF: docker load (which prints the image's own name), tag, push.
# Docker talks plain HTTP to registries on 127.0.0.0/8.
push_tarball() {
	local loaded
	loaded=$(docker load -i "$1" | sed -n 's/^Loaded image: //p' | tail -1)
	docker tag "$loaded" "$2"
	docker push -q "$2" >/dev/null
}

ext_ref=127.0.0.1:$port/talos-lb/extension:$version
push_tarball "$repo/_out/images/extension.tar" "$ext_ref"
log "pushed $ext_ref"

# 2. Talos's imager: an ISO to boot and an installer to install from, both
#    with the extension. Host networking lets it pull from 127.0.0.1.
imager() {
	docker run --rm -t --privileged --network host -v /dev:/dev -v "$out:/out" "$IMAGER_IMAGE" \
		"$1" --arch amd64 --system-extension-image "$ext_ref"
}
imager iso
imager installer
installer_ref=$gateway:$port/talos-lb/installer:$version
push_tarball "$out/installer-amd64.tar" "127.0.0.1:$port/talos-lb/installer:$version"
log "ISO and installer made; installer pushed as $installer_ref"

# 3. Secrets and patches: the agents' certificates and config (lbctl gen
#    config), the VIP as the cluster endpoint (the QEMU provisioner would
#    otherwise put a load balancer of its own there).
lbctl=$repo/_out/lbctl
names=$(echo "$control_plane" | tr ',' '\n' | awk -v c="$cluster" '{printf "%s%s-controlplane-%d=%s", (NR > 1 ? "," : ""), c, NR, $0}')
[ -f "$out/secrets/ca.crt" ] || "$lbctl" gen secrets -o "$out/secrets" >/dev/null
"$lbctl" gen config --secrets "$out/secrets" -o "$out/patches" --force \
	--control-plane "$names" --vip "$vip" --link "$link" --firewall-subnets "$cidr" >/dev/null
cat >"$out/patches/endpoint.yaml" <<YAML
cluster:
  controlPlane:
    endpoint: https://$vip:6443
  apiServer:
    certSANs: [$vip]
YAML
"$lbctl" validate "$out/patches/controlplane.yaml" "$out/patches/worker.yaml"

# 4. The cluster. Talos pulls the installer over plain HTTP from the mirror.
# `cluster create dev` is the variant that takes local boot assets (the
# user-facing `cluster create qemu` pulls from Image Factory, which only serves
# official extensions).
sudo -E talosctl cluster create dev --name "$cluster" --provisioner qemu \
	--cidr "$cidr" --controlplanes 3 --workers 1 \
	--iso-path "$out/metal-amd64.iso" --install-image "$installer_ref" \
	--registry-mirror "$gateway:$port=http://$gateway:$port" --registry-insecure-skip-verify "$gateway:$port" \
	--config-patch @"$out/patches/endpoint.yaml" \
	--config-patch-control-plane @"$out/patches/controlplane.yaml" \
	--config-patch-worker @"$out/patches/worker.yaml"
log "cluster $cluster up"

# 5. The tests.
status=0
(cd "$repo" && LB_TALOS_VIP="$vip" LB_TALOS_CONTROL_PLANE="$control_plane" LB_LBCTL="$lbctl" \
	LB_TALOS_LBCONFIG="$out/patches/lbconfig" LB_TALOSCTL="$(command -v talosctl)" \
	go test -tags talos -count=1 -v -timeout 20m ./integration/talos/) || status=$?
"$lbctl" --lbconfig "$out/patches/lbconfig" doctor || true
log "tests finished with status $status"

[ "${KEEP:-0}" = 1 ] || destroy
exit "$status"
