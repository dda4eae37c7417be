package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// L2OwnershipType is this node's view of who answers ARP/NDP for one L2-mode
// service IP; its ID is the address.
const L2OwnershipType = resource.Type("L2Ownerships.service.talos-lb.dev")

// L2Ownership is this node's view of who answers ARP/NDP for one L2-mode
// service IP, and the reason when it is not this node.
type L2Ownership = typed.Resource[Spec[resourcepb.L2OwnershipSpec, *resourcepb.L2OwnershipSpec], L2OwnershipExtension]

// NewL2Ownership returns an empty L2Ownership for the address.
func NewL2Ownership(address string) *L2Ownership {
	return newResource[resourcepb.L2OwnershipSpec, *resourcepb.L2OwnershipSpec, L2OwnershipExtension](
		ServiceNamespace, L2OwnershipType, address, &resourcepb.L2OwnershipSpec{})
}

// L2OwnershipExtension provides the resource definition.
type L2OwnershipExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (L2OwnershipExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             L2OwnershipType,
		Aliases:          []resource.Type{"l2", "l2own", "l2owner", "l2owners"},
		DefaultNamespace: ServiceNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Owner", JSONPath: "{.owner}"},
			{Name: "Owned", JSONPath: "{.owned}"},
			{Name: "Reason", JSONPath: "{.reason}"},
			{Name: "Interfaces", JSONPath: "{.interfaces[*]}"},
			{Name: "Since", JSONPath: "{.since}"},
			{Name: "Error", JSONPath: "{.error}"},
		},
	}
}

func init() {
	registerType(L2OwnershipType, &L2Ownership{})
}
