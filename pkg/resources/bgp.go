package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// BGPConfigID is the ID of the only BGPConfig.
const BGPConfigID = resource.ID("speaker")

// BGPConfigType is the speaker's identity and its routers.
const BGPConfigType = resource.Type("BGPConfigs.bgp.talos-lb.dev")

// BGPConfig is the speaker's identity and its routers.
type BGPConfig = typed.Resource[Spec[resourcepb.BgpConfigSpec, *resourcepb.BgpConfigSpec], BGPConfigExtension]

// NewBGPConfig returns an empty BGPConfig.
func NewBGPConfig() *BGPConfig {
	return newResource[resourcepb.BgpConfigSpec, *resourcepb.BgpConfigSpec, BGPConfigExtension](
		BGPNamespace, BGPConfigType, BGPConfigID, &resourcepb.BgpConfigSpec{})
}

// BGPConfigExtension provides the resource definition.
type BGPConfigExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (BGPConfigExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             BGPConfigType,
		Aliases:          []resource.Type{"bgpconfig"},
		DefaultNamespace: BGPNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "ASN", JSONPath: "{.asn}"},
			{Name: "Router ID", JSONPath: "{.routerId}"},
			{Name: "Peers", JSONPath: "{.peers[*].name}"},
		},
	}
}

// BGPAdvertisementType is one owner's wish to announce a prefix; its ID is owner/prefix.
const BGPAdvertisementType = resource.Type("BGPAdvertisements.bgp.talos-lb.dev")

// BGPAdvertisement is one owner's wish to announce a prefix.
type BGPAdvertisement = typed.Resource[Spec[resourcepb.BgpAdvertisementSpec, *resourcepb.BgpAdvertisementSpec], BGPAdvertisementExtension]

// NewBGPAdvertisement returns an empty BGPAdvertisement.
func NewBGPAdvertisement(id string) *BGPAdvertisement {
	return newResource[resourcepb.BgpAdvertisementSpec, *resourcepb.BgpAdvertisementSpec, BGPAdvertisementExtension](
		BGPNamespace, BGPAdvertisementType, id, &resourcepb.BgpAdvertisementSpec{})
}

// BGPAdvertisementExtension provides the resource definition.
type BGPAdvertisementExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (BGPAdvertisementExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             BGPAdvertisementType,
		Aliases:          []resource.Type{"advertisement", "advertisements", "adv"},
		DefaultNamespace: BGPNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Prefix", JSONPath: "{.prefix}"},
			{Name: "Owner", JSONPath: "{.owner}"},
			{Name: "Communities", JSONPath: "{.communities[*]}"},
			{Name: "Peers", JSONPath: "{.peers[*]}"},
		},
	}
}

// BGPRouteType is one prefix as the speaker announces it; its ID is the prefix.
const BGPRouteType = resource.Type("BGPRoutes.bgp.talos-lb.dev")

// BGPRoute is one prefix as the speaker announces it.
type BGPRoute = typed.Resource[Spec[resourcepb.BgpRouteSpec, *resourcepb.BgpRouteSpec], BGPRouteExtension]

// NewBGPRoute returns an empty BGPRoute.
func NewBGPRoute(prefix string) *BGPRoute {
	return newResource[resourcepb.BgpRouteSpec, *resourcepb.BgpRouteSpec, BGPRouteExtension](
		BGPNamespace, BGPRouteType, prefix, &resourcepb.BgpRouteSpec{})
}

// BGPRouteExtension provides the resource definition.
type BGPRouteExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (BGPRouteExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             BGPRouteType,
		Aliases:          []resource.Type{"route", "routes"},
		DefaultNamespace: BGPNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Announced", JSONPath: "{.announced}"},
			{Name: "Owners", JSONPath: "{.owners[*]}"},
			{Name: "Communities", JSONPath: "{.communities[*]}"},
			{Name: "Peers", JSONPath: "{.peers[*]}"},
			{Name: "Last Error", JSONPath: "{.lastError}"},
		},
	}
}

// BGPPeerStatusType is one BGP session; its ID is the peer's name.
const BGPPeerStatusType = resource.Type("BGPPeerStatuses.bgp.talos-lb.dev")

// BGPPeerStatus is one BGP session.
type BGPPeerStatus = typed.Resource[Spec[resourcepb.BgpPeerStatusSpec, *resourcepb.BgpPeerStatusSpec], BGPPeerStatusExtension]

// NewBGPPeerStatus returns an empty BGPPeerStatus.
func NewBGPPeerStatus(name string) *BGPPeerStatus {
	return newResource[resourcepb.BgpPeerStatusSpec, *resourcepb.BgpPeerStatusSpec, BGPPeerStatusExtension](
		BGPNamespace, BGPPeerStatusType, name, &resourcepb.BgpPeerStatusSpec{})
}

// BGPPeerStatusExtension provides the resource definition.
type BGPPeerStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (BGPPeerStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             BGPPeerStatusType,
		Aliases:          []resource.Type{"peer", "peers", "bgppeer", "bgppeers"},
		DefaultNamespace: BGPNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Address", JSONPath: "{.address}"},
			{Name: "ASN", JSONPath: "{.asn}"},
			{Name: "Source", JSONPath: "{.source}"},
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Since", JSONPath: "{.since}"},
			{Name: "Sent", JSONPath: "{.prefixesSent}"},
			{Name: "BFD", JSONPath: "{.bfdState}"},
			{Name: "Last Error", JSONPath: "{.lastError}"},
		},
	}
}

func init() {
	registerType(BGPConfigType, &BGPConfig{})
	registerType(BGPAdvertisementType, &BGPAdvertisement{})
	registerType(BGPRouteType, &BGPRoute{})
	registerType(BGPPeerStatusType, &BGPPeerStatus{})
}
