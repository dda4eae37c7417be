// Package crd owns lb-controller's configuration API: the four custom
// resources of group lb.talos-lb.dev/v1alpha1 (IPAddressPool, BGPPeer,
// BGPAdvertisement, L2Advertisement), their strict parsing and validation, and
// the Config compiled from the valid ones that the controller consults while it
// allocates service IPs and computes each node's desired state.
//
// The kinds are modelled on MetalLB's so that migrating is mostly a matter of
// changing the apiVersion; docs/controller-crds.md lists the differences.
//
// The controller reads the objects through the dynamic client as
// unstructured.Unstructured, so there is no generated code here: Parse*
// decode an object strictly (unknown fields and wrong types are errors naming
// the full field path), fill in the defaults and validate it, reporting every
// problem at once. Compile turns the valid objects into a Config; it is pure
// (no client calls) and does all selector compilation up front, so the
// per-node and per-pool questions the controller asks thousands of times per
// recompute cost a map lookup and a few label matches.
//
// Why strict in Go when the API server already prunes unknown fields: the
// CRDs in deploy/crds carry structural schemas without
// x-kubernetes-preserve-unknown-fields, so `kubectl apply` (field validation
// "Strict" by default) rejects a typo such as spec.adresses outright, while
// other clients (default field validation "Warn") get it silently dropped.
// The Go parser is the second line: it sees objects that did not go through
// this schema (files checked offline, tests, an older CRD left installed
// while the controller was upgraded, where a field the controller relies on
// is missing from the schema) and must then fail loudly rather than run
// without, say, a BGP password.
package crd

const (
	// Group is the API group of every kind here.
	Group = "lb.talos-lb.dev"
	// Version is the only version served.
	Version = "v1alpha1"
	// APIVersion is what the objects' apiVersion must say.
	APIVersion = Group + "/" + Version

	KindIPAddressPool    = "IPAddressPool"
	KindBGPPeer          = "BGPPeer"
	KindBGPAdvertisement = "BGPAdvertisement"
	KindL2Advertisement  = "L2Advertisement"

	// ConditionValid is the condition the controller writes on every object:
	// True, or False with reason ReasonInvalid and a message naming the fields.
	ConditionValid = "Valid"
	ReasonValid    = "Valid"
	ReasonInvalid  = "Invalid"
)
