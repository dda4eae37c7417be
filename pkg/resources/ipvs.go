package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// IPVSServiceType is one virtual service this node should balance with kernel IPVS; its ID
// names the service (e.g. "apiserver") and is the ID of its IPVSStatus.
const IPVSServiceType = resource.Type("IPVSServices.ipvs.talos-lb.dev")

// IPVSService is one virtual service this node should balance with kernel IPVS.
type IPVSService = typed.Resource[Spec[resourcepb.IPVSServiceSpec, *resourcepb.IPVSServiceSpec], IPVSServiceExtension]

// NewIPVSService returns an empty IPVSService with the given ID.
func NewIPVSService(id resource.ID) *IPVSService {
	return newResource[resourcepb.IPVSServiceSpec, *resourcepb.IPVSServiceSpec, IPVSServiceExtension](
		IPVSNamespace, IPVSServiceType, id, &resourcepb.IPVSServiceSpec{})
}

// IPVSServiceExtension provides the resource definition.
type IPVSServiceExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (IPVSServiceExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type: IPVSServiceType,
		// The automatic abbreviations of IPVSServices and IPVSStatuses would clash.
		SkipAutomaticAliases: true,
		Aliases:              []resource.Type{"ipvsservice", "ipvsservices"},
		DefaultNamespace:     IPVSNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Address", JSONPath: "{.address}"},
			{Name: "Port", JSONPath: "{.port}"},
			{Name: "Scheduler", JSONPath: "{.scheduler}"},
			{Name: "SNAT", JSONPath: "{.snat}"},
			{Name: "Real Servers", JSONPath: "{.realServers[*].address}"},
			{Name: "Weights", JSONPath: "{.realServers[*].weight}"},
		},
	}
}

// IPVSStatusType is what the kernel runs for one IPVSService; same ID.
const IPVSStatusType = resource.Type("IPVSStatuses.ipvs.talos-lb.dev")

// IPVSStatus is what the kernel runs for one IPVSService.
type IPVSStatus = typed.Resource[Spec[resourcepb.IPVSStatusSpec, *resourcepb.IPVSStatusSpec], IPVSStatusExtension]

// NewIPVSStatus returns an empty IPVSStatus with the given ID.
func NewIPVSStatus(id resource.ID) *IPVSStatus {
	return newResource[resourcepb.IPVSStatusSpec, *resourcepb.IPVSStatusSpec, IPVSStatusExtension](
		IPVSNamespace, IPVSStatusType, id, &resourcepb.IPVSStatusSpec{})
}

// IPVSStatusExtension provides the resource definition.
type IPVSStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (IPVSStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:                 IPVSStatusType,
		SkipAutomaticAliases: true,
		Aliases:              []resource.Type{"ipvs", "ipvsstatus", "ipvsstatuses"},
		DefaultNamespace:     IPVSNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Address", JSONPath: "{.address}"},
			{Name: "Port", JSONPath: "{.port}"},
			{Name: "Scheduler", JSONPath: "{.scheduler}"},
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Real Servers", JSONPath: "{.realServers[*].address}"},
			{Name: "Weights", JSONPath: "{.realServers[*].weight}"},
			{Name: "Active", JSONPath: "{.activeConnections}"},
			{Name: "Inactive", JSONPath: "{.inactiveConnections}"},
			{Name: "Reason", JSONPath: "{.reason}"},
		},
	}
}

func init() {
	registerType(IPVSServiceType, &IPVSService{})
	registerType(IPVSStatusType, &IPVSStatus{})
}
