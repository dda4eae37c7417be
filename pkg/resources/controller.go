package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// ControllerStatusID is the ID of the controller replica's own status.
const ControllerStatusID = resource.ID("controller")

// AddressPoolStatusType is one address pool and its usage; its ID is the pool name.
const AddressPoolStatusType = resource.Type("AddressPoolStatuses.controller.talos-lb.dev")

// AddressPoolStatus is one address pool and its usage.
type AddressPoolStatus = typed.Resource[Spec[resourcepb.AddressPoolStatusSpec, *resourcepb.AddressPoolStatusSpec], AddressPoolStatusExtension]

// NewAddressPoolStatus returns an empty AddressPoolStatus.
func NewAddressPoolStatus(name string) *AddressPoolStatus {
	return newResource[resourcepb.AddressPoolStatusSpec, *resourcepb.AddressPoolStatusSpec, AddressPoolStatusExtension](
		ControllerNamespace, AddressPoolStatusType, name, &resourcepb.AddressPoolStatusSpec{})
}

// AddressPoolStatusExtension provides the resource definition.
type AddressPoolStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (AddressPoolStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             AddressPoolStatusType,
		Aliases:          []resource.Type{"pool", "pools"},
		DefaultNamespace: ControllerNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Addresses", JSONPath: "{.addresses[*]}"},
			{Name: "IPv4 Used", JSONPath: "{.ipv4Used}"},
			{Name: "IPv4 Total", JSONPath: "{.ipv4Total}"},
			{Name: "IPv6 Used", JSONPath: "{.ipv6Used}"},
			{Name: "IPv6 Total", JSONPath: "{.ipv6Total}"},
			{Name: "Auto", JSONPath: "{.autoAssign}"},
			{Name: "Error", JSONPath: "{.error}"},
		},
	}
}

// ServiceAllocationType is one LoadBalancer Service we handle; its ID is namespace/name.
const ServiceAllocationType = resource.Type("ServiceAllocations.controller.talos-lb.dev")

// ServiceAllocation is one LoadBalancer Service we handle: its IPs and who announces them.
type ServiceAllocation = typed.Resource[Spec[resourcepb.ServiceAllocationSpec, *resourcepb.ServiceAllocationSpec], ServiceAllocationExtension]

// NewServiceAllocation returns an empty ServiceAllocation.
func NewServiceAllocation(id string) *ServiceAllocation {
	return newResource[resourcepb.ServiceAllocationSpec, *resourcepb.ServiceAllocationSpec, ServiceAllocationExtension](
		ControllerNamespace, ServiceAllocationType, id, &resourcepb.ServiceAllocationSpec{})
}

// ServiceAllocationExtension provides the resource definition.
type ServiceAllocationExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (ServiceAllocationExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             ServiceAllocationType,
		Aliases:          []resource.Type{"svc", "svcs", "service", "services"},
		DefaultNamespace: ControllerNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Addresses", JSONPath: "{.addresses[*]}"},
			{Name: "Pools", JSONPath: "{.pools[*]}"},
			{Name: "Protocols", JSONPath: "{.protocols[*]}"},
			{Name: "Ranking", JSONPath: "{.ranking[*]}"},
			{Name: "Announcing", JSONPath: "{.announcing[*]}"},
			{Name: "Error", JSONPath: "{.error}"},
		},
	}
}

// AgentPushType is the controller's push to one node's agent; its ID is the node name.
const AgentPushType = resource.Type("AgentPushes.controller.talos-lb.dev")

// AgentPush is the controller's push to one node's agent.
type AgentPush = typed.Resource[Spec[resourcepb.AgentPushSpec, *resourcepb.AgentPushSpec], AgentPushExtension]

// NewAgentPush returns an empty AgentPush.
func NewAgentPush(node string) *AgentPush {
	return newResource[resourcepb.AgentPushSpec, *resourcepb.AgentPushSpec, AgentPushExtension](
		ControllerNamespace, AgentPushType, node, &resourcepb.AgentPushSpec{})
}

// AgentPushExtension provides the resource definition.
type AgentPushExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (AgentPushExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             AgentPushType,
		Aliases:          []resource.Type{"agentpush", "agentpushes", "agents"},
		DefaultNamespace: ControllerNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Address", JSONPath: "{.address}"},
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Desired", JSONPath: "{.desiredGeneration}"},
			{Name: "Acked", JSONPath: "{.ackedGeneration}"},
			{Name: "Service IPs", JSONPath: "{.serviceIps}"},
			{Name: "Last Error", JSONPath: "{.lastError}"},
		},
	}
}

// ControllerStatusType is the controller replica's own state.
const ControllerStatusType = resource.Type("ControllerStatuses.controller.talos-lb.dev")

// ControllerStatus is the controller replica's own state.
type ControllerStatus = typed.Resource[Spec[resourcepb.ControllerStatusSpec, *resourcepb.ControllerStatusSpec], ControllerStatusExtension]

// NewControllerStatus returns an empty ControllerStatus.
func NewControllerStatus() *ControllerStatus {
	return newResource[resourcepb.ControllerStatusSpec, *resourcepb.ControllerStatusSpec, ControllerStatusExtension](
		ControllerNamespace, ControllerStatusType, ControllerStatusID, &resourcepb.ControllerStatusSpec{})
}

// ControllerStatusExtension provides the resource definition.
type ControllerStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (ControllerStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             ControllerStatusType,
		Aliases:          []resource.Type{"controller", "controllerstatus"},
		DefaultNamespace: ControllerNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Leader", JSONPath: "{.leader}"},
			{Name: "Leader Identity", JSONPath: "{.leaderIdentity}"},
			{Name: "Services", JSONPath: "{.services}"},
			{Name: "Nodes", JSONPath: "{.nodes}"},
			{Name: "Eligible", JSONPath: "{.eligibleNodes}"},
			{Name: "Warnings", JSONPath: "{.warnings[*]}"},
		},
	}
}

func init() {
	registerType(AddressPoolStatusType, &AddressPoolStatus{})
	registerType(ServiceAllocationType, &ServiceAllocation{})
	registerType(AgentPushType, &AgentPush{})
	registerType(ControllerStatusType, &ControllerStatus{})
}
