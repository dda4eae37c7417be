//go:build tools

// Package kapi pins the kube-apiserver command so `go mod tidy` keeps its
// dependencies; build.sh builds it by import path.
package kapi

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
