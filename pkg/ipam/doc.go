// Package ipam owns the allocation state of service load-balancer IPs and the
// rules that govern it: address pools, requested IPs, sharing keys, dual-stack
// families, rebuilding from what Services already hold, and per-pool usage.
//
// It never talks to Kubernetes and imports none of its types. The controller
// turns Services into Requests and Claims, feeds them in, and writes the
// answers back to Service status and Events; Kubernetes stays the source of
// truth, so this package keeps no state that a restart could not rebuild with
// Assign.
//
// An Allocator is safe for concurrent use: the controller's reconcile loop
// writes while its gRPC server reads usage for lbctl and metrics, and one
// mutex is cheaper to reason about than making every caller serialise.
package ipam
