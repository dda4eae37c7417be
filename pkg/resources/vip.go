package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// ControlPlaneID is the ID of the control-plane VIP's config and election.
const ControlPlaneID = resource.ID("control-plane")

// VIPConfigType is the control-plane VIP this node takes part in.
const VIPConfigType = resource.Type("VIPConfigs.vip.talos-lb.dev")

// VIPConfig is the control-plane VIP this node takes part in.
type VIPConfig = typed.Resource[Spec[resourcepb.VipConfigSpec, *resourcepb.VipConfigSpec], VIPConfigExtension]

// NewVIPConfig returns an empty VIPConfig.
func NewVIPConfig() *VIPConfig {
	return newResource[resourcepb.VipConfigSpec, *resourcepb.VipConfigSpec, VIPConfigExtension](
		VIPNamespace, VIPConfigType, ControlPlaneID, &resourcepb.VipConfigSpec{})
}

// VIPConfigExtension provides the resource definition.
type VIPConfigExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (VIPConfigExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             VIPConfigType,
		Aliases:          []resource.Type{"vipconfig"},
		DefaultNamespace: VIPNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Addresses", JSONPath: "{.addresses[*]}"},
			{Name: "Link", JSONPath: "{.link}"},
			{Name: "Peers", JSONPath: "{.peers[*].name}"},
		},
	}
}

// VIPLeadershipType is this node's view of the VIP election.
const VIPLeadershipType = resource.Type("VIPLeaderships.vip.talos-lb.dev")

// VIPLeadership is this node's view of the VIP election.
type VIPLeadership = typed.Resource[Spec[resourcepb.VipLeadershipSpec, *resourcepb.VipLeadershipSpec], VIPLeadershipExtension]

// NewVIPLeadership returns an empty VIPLeadership.
func NewVIPLeadership() *VIPLeadership {
	return newResource[resourcepb.VipLeadershipSpec, *resourcepb.VipLeadershipSpec, VIPLeadershipExtension](
		VIPNamespace, VIPLeadershipType, ControlPlaneID, &resourcepb.VipLeadershipSpec{})
}

// VIPLeadershipExtension provides the resource definition.
type VIPLeadershipExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (VIPLeadershipExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             VIPLeadershipType,
		Aliases:          []resource.Type{"election", "elections", "leadership"},
		DefaultNamespace: VIPNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Leader", JSONPath: "{.leader}"},
			{Name: "Term", JSONPath: "{.term}"},
			{Name: "Since", JSONPath: "{.since}"},
			{Name: "Peers", JSONPath: "{.peers[*].name}"},
		},
	}
}

// VIPStatusType says whether this node should hold one VIP; its ID is the address.
const VIPStatusType = resource.Type("VIPStatuses.vip.talos-lb.dev")

// VIPStatus says whether this node should hold one VIP, and if not, why.
type VIPStatus = typed.Resource[Spec[resourcepb.VipStatusSpec, *resourcepb.VipStatusSpec], VIPStatusExtension]

// NewVIPStatus returns an empty VIPStatus for the address.
func NewVIPStatus(address string) *VIPStatus {
	return newResource[resourcepb.VipStatusSpec, *resourcepb.VipStatusSpec, VIPStatusExtension](
		VIPNamespace, VIPStatusType, address, &resourcepb.VipStatusSpec{})
}

// VIPStatusExtension provides the resource definition.
type VIPStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (VIPStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             VIPStatusType,
		Aliases:          []resource.Type{"vip", "vips"},
		DefaultNamespace: VIPNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Link", JSONPath: "{.link}"},
			{Name: "Holding", JSONPath: "{.holding}"},
			{Name: "Since", JSONPath: "{.since}"},
			{Name: "Reason", JSONPath: "{.reason}"},
		},
	}
}

// ManagedAddressType is an address the agent added and will remove; its ID is link/address.
const ManagedAddressType = resource.Type("ManagedAddresses.vip.talos-lb.dev")

// ManagedAddress is an address the agent added and will remove.
type ManagedAddress = typed.Resource[Spec[resourcepb.ManagedAddressSpec, *resourcepb.ManagedAddressSpec], ManagedAddressExtension]

// NewManagedAddress returns an empty ManagedAddress.
func NewManagedAddress(id string) *ManagedAddress {
	return newResource[resourcepb.ManagedAddressSpec, *resourcepb.ManagedAddressSpec, ManagedAddressExtension](
		VIPNamespace, ManagedAddressType, id, &resourcepb.ManagedAddressSpec{})
}

// ManagedAddressExtension provides the resource definition.
type ManagedAddressExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (ManagedAddressExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             ManagedAddressType,
		Aliases:          []resource.Type{"address", "addresses"},
		DefaultNamespace: VIPNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Link", JSONPath: "{.link}"},
			{Name: "Address", JSONPath: "{.address}"},
			{Name: "Added", JSONPath: "{.addedAt}"},
			{Name: "Announcements", JSONPath: "{.announcements}"},
			{Name: "Last Error", JSONPath: "{.lastError}"},
		},
	}
}

func init() {
	registerType(VIPConfigType, &VIPConfig{})
	registerType(VIPLeadershipType, &VIPLeadership{})
	registerType(VIPStatusType, &VIPStatus{})
	registerType(ManagedAddressType, &ManagedAddress{})
}
