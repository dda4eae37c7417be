package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// PushStatusID is the ID of the agent's one PushStatus.
const PushStatusID = resource.ID("controller")

// APIEndpointsID is the ID of the pushed Kubernetes API endpoints.
const APIEndpointsID = resource.ID("kubernetes")

// PushStatusType says which controller push the agent runs and what it refused.
const PushStatusType = resource.Type("PushStatuses.config.talos-lb.dev")

// PushStatus says which controller push the agent runs and what it refused.
type PushStatus = typed.Resource[Spec[resourcepb.PushStatusSpec, *resourcepb.PushStatusSpec], PushStatusExtension]

// NewPushStatus returns an empty PushStatus.
func NewPushStatus() *PushStatus {
	return newResource[resourcepb.PushStatusSpec, *resourcepb.PushStatusSpec, PushStatusExtension](
		ConfigNamespace, PushStatusType, PushStatusID, &resourcepb.PushStatusSpec{})
}

// PushStatusExtension provides the resource definition.
type PushStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (PushStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             PushStatusType,
		Aliases:          []resource.Type{"push", "pushstatus"},
		DefaultNamespace: ConfigNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Generation", JSONPath: "{.generation}"},
			{Name: "Controller", JSONPath: "{.controller}"},
			{Name: "Applied", JSONPath: "{.appliedAt}"},
			{Name: "Service IPs", JSONPath: "{.serviceIps}"},
			{Name: "Last Error", JSONPath: "{.lastError}"},
		},
	}
}

// ServiceIPType is one pushed load-balancer IP; its ID is the address.
const ServiceIPType = resource.Type("ServiceIPs.service.talos-lb.dev")

// ServiceIP is one pushed load-balancer IP and how to announce it.
type ServiceIP = typed.Resource[Spec[resourcepb.ServiceIPSpec, *resourcepb.ServiceIPSpec], ServiceIPExtension]

// NewServiceIP returns an empty ServiceIP for the address.
func NewServiceIP(address string) *ServiceIP {
	return newResource[resourcepb.ServiceIPSpec, *resourcepb.ServiceIPSpec, ServiceIPExtension](
		ServiceNamespace, ServiceIPType, address, &resourcepb.ServiceIPSpec{})
}

// ServiceIPExtension provides the resource definition.
type ServiceIPExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (ServiceIPExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             ServiceIPType,
		Aliases:          []resource.Type{"serviceip", "sip", "sips"},
		DefaultNamespace: ServiceNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Services", JSONPath: "{.services[*]}"},
			{Name: "L2 Nodes", JSONPath: "{.l2.nodeSet}"},
			{Name: "BGP", JSONPath: "{.bgp[*].advertisement}"},
		},
	}
}

// PushedBGPPeerType is a BGP router the controller told this node to peer with; its ID is the peer's name.
const PushedBGPPeerType = resource.Type("PushedBGPPeers.bgp.talos-lb.dev")

// PushedBGPPeer is a BGP router the controller told this node to peer with.
// Its password never appears here: the agent keeps it in a private file named
// by peer.passwordFile.
type PushedBGPPeer = typed.Resource[Spec[resourcepb.PushedBgpPeer, *resourcepb.PushedBgpPeer], PushedBGPPeerExtension]

// NewPushedBGPPeer returns an empty PushedBGPPeer.
func NewPushedBGPPeer(name string) *PushedBGPPeer {
	return newResource[resourcepb.PushedBgpPeer, *resourcepb.PushedBgpPeer, PushedBGPPeerExtension](
		BGPNamespace, PushedBGPPeerType, name, &resourcepb.PushedBgpPeer{})
}

// PushedBGPPeerExtension provides the resource definition.
type PushedBGPPeerExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (PushedBGPPeerExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             PushedBGPPeerType,
		Aliases:          []resource.Type{"pushedpeer", "pushedpeers"},
		DefaultNamespace: BGPNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Address", JSONPath: "{.peer.address}"},
			{Name: "ASN", JSONPath: "{.peer.asn}"},
			{Name: "Local ASN", JSONPath: "{.localAsn}"},
		},
	}
}

// APIEndpointsType lists the Kubernetes API servers the controller saw ready.
const APIEndpointsType = resource.Type("APIEndpoints.config.talos-lb.dev")

// APIEndpoints lists the Kubernetes API servers the controller saw ready.
type APIEndpoints = typed.Resource[Spec[resourcepb.ApiEndpointsSpec, *resourcepb.ApiEndpointsSpec], APIEndpointsExtension]

// NewAPIEndpoints returns an empty APIEndpoints.
func NewAPIEndpoints() *APIEndpoints {
	return newResource[resourcepb.ApiEndpointsSpec, *resourcepb.ApiEndpointsSpec, APIEndpointsExtension](
		ConfigNamespace, APIEndpointsType, APIEndpointsID, &resourcepb.ApiEndpointsSpec{})
}

// APIEndpointsExtension provides the resource definition.
type APIEndpointsExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (APIEndpointsExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             APIEndpointsType,
		Aliases:          []resource.Type{"apiendpoints"},
		DefaultNamespace: ConfigNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Endpoints", JSONPath: "{.endpoints[*]}"},
		},
	}
}

func init() {
	registerType(PushStatusType, &PushStatus{})
	registerType(ServiceIPType, &ServiceIP{})
	registerType(PushedBGPPeerType, &PushedBGPPeer{})
	registerType(APIEndpointsType, &APIEndpoints{})
}

// NodeSetType is a pushed set of eligible nodes; its ID is the set's name.
const NodeSetType = resource.Type("NodeSets.service.talos-lb.dev")

// NodeSet is a pushed set of eligible nodes service IPs refer to.
type NodeSet = typed.Resource[Spec[resourcepb.NodeSet, *resourcepb.NodeSet], NodeSetExtension]

// NewNodeSet returns an empty NodeSet.
func NewNodeSet(name string) *NodeSet {
	return newResource[resourcepb.NodeSet, *resourcepb.NodeSet, NodeSetExtension](
		ServiceNamespace, NodeSetType, name, &resourcepb.NodeSet{})
}

// NodeSetExtension provides the resource definition.
type NodeSetExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (NodeSetExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             NodeSetType,
		Aliases:          []resource.Type{"nodeset", "nodesets"},
		DefaultNamespace: ServiceNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Nodes", JSONPath: "{.nodes[*]}"},
		},
	}
}

// BGPAdvertisementRuleType is a pushed BGP advertisement (communities, peers); its ID is its name.
const BGPAdvertisementRuleType = resource.Type("BGPAdvertisementRules.service.talos-lb.dev")

// BGPAdvertisementRule is a pushed BGP advertisement service IPs refer to.
type BGPAdvertisementRule = typed.Resource[Spec[resourcepb.BgpAdvertisementRule, *resourcepb.BgpAdvertisementRule], BGPAdvertisementRuleExtension]

// NewBGPAdvertisementRule returns an empty BGPAdvertisementRule.
func NewBGPAdvertisementRule(name string) *BGPAdvertisementRule {
	return newResource[resourcepb.BgpAdvertisementRule, *resourcepb.BgpAdvertisementRule, BGPAdvertisementRuleExtension](
		ServiceNamespace, BGPAdvertisementRuleType, name, &resourcepb.BgpAdvertisementRule{})
}

// BGPAdvertisementRuleExtension provides the resource definition.
type BGPAdvertisementRuleExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (BGPAdvertisementRuleExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             BGPAdvertisementRuleType,
		Aliases:          []resource.Type{"bgprule", "bgprules"},
		DefaultNamespace: ServiceNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Communities", JSONPath: "{.communities[*]}"},
			{Name: "Local Pref", JSONPath: "{.localPref}"},
			{Name: "Peers", JSONPath: "{.peers[*]}"},
		},
	}
}

func init() {
	registerType(NodeSetType, &NodeSet{})
	registerType(BGPAdvertisementRuleType, &BGPAdvertisementRule{})
	registerType(PushedNodeType, &PushedNode{})
}

// PushedNodeType is a node of the cluster with its agent's host, as the
// controller pushed it; its ID is the node name. The liveness gossip joins
// these nodes (agent/member), so agents find each other without the controller.
const PushedNodeType = resource.Type("PushedNodes.service.talos-lb.dev")

// PushedNode is a node of the cluster with its agent's host, as pushed.
type PushedNode = typed.Resource[Spec[resourcepb.NodeAddress, *resourcepb.NodeAddress], PushedNodeExtension]

// NewPushedNode returns an empty PushedNode.
func NewPushedNode(name string) *PushedNode {
	return newResource[resourcepb.NodeAddress, *resourcepb.NodeAddress, PushedNodeExtension](
		ServiceNamespace, PushedNodeType, name, &resourcepb.NodeAddress{})
}

// PushedNodeExtension provides the resource definition.
type PushedNodeExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (PushedNodeExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             PushedNodeType,
		Aliases:          []resource.Type{"pushednode", "pushednodes"},
		DefaultNamespace: ServiceNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Address", JSONPath: "{.address}"},
		},
	}
}
