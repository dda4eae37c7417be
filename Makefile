# talos-lb — every entry point a developer or CI uses.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Expanded once: a commit landing during a long build must not stamp its parts differently.
VERSION := $(VERSION)
GO ?= go
OUT := _out
LDFLAGS := -s -w -X github.com/talos-lb/talos-lb/pkg/version.Version=$(VERSION)
BINARIES := lb-agent lbctl lb-controller
export CGO_ENABLED := 0

.PHONY: all build generate check-generate lint test test-unit test-netns test-vm test-k8s deps demo clean bench-vip bench-proxy bench-bgp bench-controller bench-l2

all: build

build: $(addprefix $(OUT)/,$(BINARIES))

$(OUT)/%: FORCE
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

FORCE:

## generate: regenerate protobuf code from api/ with buf (run as a Go tool, no protoc needed).
generate:
	cd api && $(GO) tool -modfile=../hack/tools/go.mod buf generate

## check-generate: fail when the checked-in generated code differs from what `make generate` makes.
check-generate: generate
	@git diff --exit-code -- api || { echo "generated code is out of date: run make generate and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- api)" || { git status --porcelain -- api; echo "generate produced untracked files" >&2; exit 1; }

## lint: gofmt, go vet, and buf lint of the protobuf API.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...
	cd api && $(GO) tool -modfile=../hack/tools/go.mod buf lint

## deps: install the Debian packages the lab and tests need (idempotent).
deps:
	./hack/install-deps.sh

## test-unit: unit tests (no root, no network namespaces).
test-unit:
	$(GO) test -count=1 ./agent/... ./controller/... ./pkg/... ./cmd/...

## test-netns: the netns tier: real agent processes in network namespaces with BIRD and real clients (root).
test-netns: deps build
	LB_BIN_DIR=$(CURDIR)/$(OUT) $(GO) test -count=1 -p 1 -timeout 15m ./integration/...

## test-k8s: the k8s tier: lb-controller against a real kube-apiserver and etcd (built once by hack/kapi/build.sh, cached).
test-k8s: build
	$(GO) vet -tags k8s ./integration/k8s/...
	LB_KAPI_DIR="$$(./hack/kapi/build.sh)" LB_BIN_DIR=$(CURDIR)/$(OUT) $(GO) test -tags k8s -count=1 -p 1 -timeout 20m ./integration/k8s/...

## test-vm: the VM tier: Debian's kernel under QEMU runs the IPVS controller against real IPVS and nftables (downloads the kernel on first use).
test-vm:
	./hack/vm/run.sh

## extension: the Talos extension's tree, manifest.yaml and rootfs/ with the static lb-agent, in _out/extension.
.PHONY: extension images test-extension
EXT := $(OUT)/extension
extension: $(OUT)/lb-agent
	rm -rf $(EXT)
	mkdir -p $(EXT)/rootfs/usr/local/lib/containers/lb-agent
	sed 's/@VERSION@/$(VERSION)/' manifest.yaml >$(EXT)/manifest.yaml
	cp -R extension/rootfs/. $(EXT)/rootfs/
	install -m 0755 $(OUT)/lb-agent $(EXT)/rootfs/usr/local/lib/containers/lb-agent/lb-agent
	chmod -R u=rwX,go=rX $(EXT)

## images: the extension image (and lb-controller's, once cmd/lb-controller exists) as OCI layouts and
## tarballs in _out/images, built reproducibly by hack/images (its own module) without a Docker engine.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
CONTROLLER := $(wildcard cmd/lb-controller)
images: extension $(if $(CONTROLLER),$(OUT)/lb-controller)
	$(GO) build -C hack/images -o $(CURDIR)/$(OUT)/imagetool .
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(OUT)/imagetool build -root $(EXT) -ref talos-lb/extension:$(VERSION) -out $(OUT)/images
ifneq ($(CONTROLLER),)
	rm -rf $(OUT)/controller-root && mkdir -p $(OUT)/controller-root
	install -m 0755 $(OUT)/lb-controller $(OUT)/controller-root/lb-controller
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(OUT)/imagetool build -root $(OUT)/controller-root -ref talos-lb/controller:$(VERSION) \
		-entrypoint /lb-controller -user 65532:65532 -out $(OUT)/images
endif

## test-extension: Talos's own validators (machinery v1.13.9, module integration/talosext) on the extension,
## its image, the example patches and lbctl gen config's; hack/images' tests; the talos tier compiles.
## No full `go vet` of integration/talosext: vet's facts for machinery's ~400 packages cost a minute cold;
## `go test` runs vet's default checks on the tests themselves. No debug info for those 400 packages
## either (stack traces keep file:line): a tenth less compile time on a cold 2-core machine.
NODWARF := -gcflags=all=-dwarf=false -ldflags=-w
test-extension: images $(OUT)/lbctl
	cd hack/images && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd integration/talosext && LB_EXTENSION_DIR=$(CURDIR)/$(EXT) LB_IMAGES_DIR=$(CURDIR)/$(OUT)/images \
		LB_LBCTL=$(CURDIR)/$(OUT)/lbctl LB_VERSION=$(VERSION) $(GO) test -count=1 $(NODWARF) ./...
	$(GO) vet -tags talos ./integration/talos/

## test: everything CI runs.
test: lint check-generate test-unit test-extension test-netns test-k8s test-vm

## bench-bgp: how fast routers follow BGP-mode VIP nodes (BFD crash, SIGTERM, recovery), with BIRD (root).
bench-bgp: deps build
	LB_BIN_DIR=$(CURDIR)/$(OUT) $(GO) run ./hack/bench/bgp

## bench-vip: client-observed VIP failover, talos-lb vs keepalived (VRRP), side by side (root).
bench-vip: deps build
	LB_BIN_DIR=$(CURDIR)/$(OUT) $(GO) run ./hack/bench/vip

## bench-l2: client-observed L2 failover of a service IP with the controller down (4 agents, owner frozen; root).
bench-l2: deps build
	LB_BIN_DIR=$(CURDIR)/$(OUT) $(GO) run ./hack/bench/l2

## bench-proxy: the local API proxy vs direct, HAProxy and go-loadbalancer (KubePrism) on loopback.
## go-loadbalancer is built from its own module under hack/bench/golb, outside the project's dependencies.
bench-proxy: deps build
	$(GO) build -C hack/bench/golb -o $(CURDIR)/$(OUT)/golb .
	$(GO) run ./hack/bench/proxy -bin $(CURDIR)/$(OUT)

## bench-controller: lb-controller's reconcile pass and full push at 1,000 nodes and 10,000 Services, to 1,000
## in-process agents over gRPC and mutual TLS (no root); flags after ARGS=, e.g. ARGS='-cpuprofile /tmp/ctl'.
bench-controller:
	$(GO) run ./hack/bench/controller $(ARGS)

## demo: a lab of 3 agents, a BIRD router and a client in network namespaces; Ctrl-C tears it down.
demo: deps build
	LB_BIN_DIR=$(CURDIR)/$(OUT) $(GO) run ./hack/demo

clean:
	rm -rf $(OUT)
