package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// ServiceBGPStatusType is this node's view of one BGP-mode service IP under
// one advertisement; its ID is "<address>/<advertisement>".
const ServiceBGPStatusType = resource.Type("ServiceBGPStatuses.service.talos-lb.dev")

// ServiceBGPStatus says whether this node announces a service IP under one
// BGP advertisement, and the reason when it does not.
type ServiceBGPStatus = typed.Resource[Spec[resourcepb.ServiceBgpStatusSpec, *resourcepb.ServiceBgpStatusSpec], ServiceBGPStatusExtension]

// ServiceBGPStatusID is the ID of the status of address under advertisement.
func ServiceBGPStatusID(address, advertisement string) resource.ID {
	return address + "/" + advertisement
}

// NewServiceBGPStatus returns an empty ServiceBGPStatus.
func NewServiceBGPStatus(id resource.ID) *ServiceBGPStatus {
	return newResource[resourcepb.ServiceBgpStatusSpec, *resourcepb.ServiceBgpStatusSpec, ServiceBGPStatusExtension](
		ServiceNamespace, ServiceBGPStatusType, id, &resourcepb.ServiceBgpStatusSpec{})
}

// ServiceBGPStatusExtension provides the resource definition.
type ServiceBGPStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (ServiceBGPStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             ServiceBGPStatusType,
		Aliases:          []resource.Type{"svcbgp", "servicebgp", "bgpservice", "bgpservices"},
		DefaultNamespace: ServiceNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Announced", JSONPath: "{.announced}"},
			{Name: "Prefix", JSONPath: "{.prefix}"},
			{Name: "Reason", JSONPath: "{.reason}"},
			{Name: "Peers", JSONPath: "{.peers[*]}"},
			{Name: "Services", JSONPath: "{.services[*]}"},
			{Name: "Since", JSONPath: "{.since}"},
			{Name: "Error", JSONPath: "{.error}"},
		},
	}
}

func init() {
	registerType(ServiceBGPStatusType, &ServiceBGPStatus{})
}
