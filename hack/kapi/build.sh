#!/usr/bin/env bash
# Builds a real kube-apiserver and etcd once and caches them under the user's
# cache directory keyed by version; prints the directory that holds both
# (usable as KUBEBUILDER_ASSETS). Cold: ~10 min and ~2.5 GB RSS; cached: instant.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")"
[[ -n "$version" ]] || { echo "build.sh: no k8s.io/kubernetes requirement in $here/go.mod" >&2; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/talos-lb/kapi/$version"
if [[ -x "$cache/kube-apiserver" && -x "$cache/etcd" ]]; then
	echo "$cache"
	exit 0
fi
minor="${version#v1.}"; minor="${minor%%.*}"
tmp="$cache.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
echo "building kube-apiserver and etcd $version into $cache (first time only, ~10 min)" >&2
cd "$here"
# One go build for both binaries shares the compile of their common packages.
go build -trimpath -ldflags "-s -w \
	-X k8s.io/component-base/version.gitVersion=$version \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$minor \
	-X k8s.io/component-base/version.gitTreeState=clean" \
	-o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver ./etcd
rm -rf "$cache"
mv "$tmp" "$cache"
echo "$cache"
