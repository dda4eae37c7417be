// Package resources defines talos-lb's COSI resource types: their type names,
// namespaces, IDs and the columns `lbctl get` prints.
//
// Specs are protobuf messages from api/resource/v1alpha1, so the same bytes
// travel over COSI's State gRPC service to lbctl and the controller. This
// package only describes resources; it never creates or changes them.
package resources

import (
	"context"
	"fmt"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/registry"
)

// Namespaces, each holding one kind of knowledge.
const (
	// ConfigNamespace holds what the agent was told: its config file, later the controller's pushes.
	ConfigNamespace resource.Namespace = "config"
	// AgentNamespace holds what the agent observes and does.
	AgentNamespace resource.Namespace = "agent"
	// VIPNamespace holds the control-plane VIP: its config, the election and the addresses held.
	VIPNamespace resource.Namespace = "vip"
	// IPVSNamespace holds kernel IPVS balancing: the virtual services wanted and what runs.
	IPVSNamespace resource.Namespace = "ipvs"
	// BGPNamespace holds the BGP speaker: its config, what to announce, and its sessions.
	BGPNamespace resource.Namespace = "bgp"
	// ServiceNamespace holds load-balancer service IPs pushed by the controller and their announcement.
	ServiceNamespace resource.Namespace = "service"
	// ControllerNamespace holds the controller's own view: pools, services, pushes to agents.
	ControllerNamespace resource.Namespace = "controller"
)

// Namespaces lists every namespace with its description, for registration.
var Namespaces = map[resource.Namespace]string{
	ConfigNamespace:     "Configuration the agent was given",
	AgentNamespace:      "What the agent observes and does",
	VIPNamespace:        "The control-plane VIP: election and addresses",
	BGPNamespace:        "The BGP speaker: sessions and announcements",
	IPVSNamespace:       "Kernel IPVS balancing: virtual services wanted and programmed",
	ServiceNamespace:    "Load-balancer service IPs pushed by the controller",
	ControllerNamespace: "The controller's pools, services and pushes to agents",
}

// spec constrains a protobuf message type usable as a resource spec.
type spec[T any] = protobuf.Spec[T]

// Spec is the COSI wrapper of a protobuf message spec.
type Spec[T any, S spec[T]] = protobuf.ResourceSpec[T, S]

// newResource builds an empty-spec resource with typed metadata; every New* below uses it.
func newResource[T any, S spec[T], E typed.Extension](ns resource.Namespace, typ resource.Type, id resource.ID, value S) *typed.Resource[Spec[T, S], E] {
	return typed.NewResource[Spec[T, S], E](
		resource.NewMetadata(ns, typ, id, resource.VersionUndefined),
		protobuf.NewResourceSpec(value),
	)
}

// all lists one empty instance of every resource type, for registration.
var all []meta.ResourceWithRD

// registerType makes a type known to the protobuf codec and to Register.
func registerType[T any, R protobuf.Res[T]](typ resource.Type, r R) {
	if err := protobuf.RegisterResource(typ, r); err != nil {
		panic(fmt.Sprintf("registering resource %s: %v", typ, err))
	}

	rd, ok := any(r).(meta.ResourceWithRD)
	if !ok {
		panic(fmt.Sprintf("resource %s has no resource definition", typ))
	}

	all = append(all, rd)
}

// Register adds every namespace and resource definition to st, so clients can
// discover them (`lbctl get rd`) and the state accepts their resources.
func Register(ctx context.Context, st state.State) error {
	nsRegistry := registry.NewNamespaceRegistry(st)
	if err := nsRegistry.RegisterDefault(ctx); err != nil {
		return fmt.Errorf("registering meta namespace: %w", err)
	}

	for ns, description := range Namespaces {
		if err := nsRegistry.Register(ctx, ns, description); err != nil {
			return fmt.Errorf("registering namespace %s: %w", ns, err)
		}
	}

	rdRegistry := registry.NewResourceRegistry(st)
	if err := rdRegistry.RegisterDefault(ctx); err != nil {
		return fmt.Errorf("registering meta resource definitions: %w", err)
	}

	for _, r := range all {
		if err := rdRegistry.Register(ctx, r); err != nil {
			return fmt.Errorf("registering resource definition %s: %w", r.Metadata().Type(), err)
		}
	}

	return nil
}

// Definitions returns the resource definitions of every talos-lb type.
func Definitions() []meta.ResourceDefinitionSpec {
	out := make([]meta.ResourceDefinitionSpec, 0, len(all))
	for _, r := range all {
		out = append(out, r.ResourceDefinition())
	}

	return out
}
