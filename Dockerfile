# syntax=docker/dockerfile:1
# talos-lb's images, for machines with a Docker engine (BuildKit). Without
# one, `make images` builds the same extension image (hack/images).
#
#   docker build --target extension --build-arg VERSION=v0.1.0 -t <registry>/talos-lb/extension:v0.1.0 .
#   docker build --target controller --build-arg VERSION=v0.1.0 -t <registry>/talos-lb/controller:v0.1.0 .
#
# BuildKit builds only the stages a target needs, so the extension target
# never touches cmd/lb-controller, which lands with the controller issue; the
# controller target fails until then. (The legacy builder would build every
# stage: use BuildKit.)

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev

# The extension's tree comes from the same Makefile rule as on a developer's
# machine (static lb-agent, version stamped into manifest.yaml, modes normalised).
FROM build AS extension-tree
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make extension VERSION=${VERSION}

# A Talos system extension: manifest.yaml and rootfs/ at the image's root.
FROM scratch AS extension
COPY --from=extension-tree /src/_out/extension/ /

FROM build AS controller-build
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make _out/lb-controller VERSION=${VERSION}

# lb-controller: one static binary, no shell, an unprivileged user. It talks
# to the Kubernetes API with the service account's own CA, so it needs no CA bundle.
FROM scratch AS controller
COPY --from=controller-build /src/_out/lb-controller /lb-controller
USER 65532:65532
ENTRYPOINT ["/lb-controller"]
