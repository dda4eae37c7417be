package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// NodeStatusType is the agent's own identity and state; its ID is the node name.
const NodeStatusType = resource.Type("NodeStatuses.agent.talos-lb.dev")

// NodeStatus is the agent's own identity and state.
type NodeStatus = typed.Resource[Spec[resourcepb.NodeStatusSpec, *resourcepb.NodeStatusSpec], NodeStatusExtension]

// NewNodeStatus returns an empty NodeStatus for the node.
func NewNodeStatus(node string) *NodeStatus {
	return newResource[resourcepb.NodeStatusSpec, *resourcepb.NodeStatusSpec, NodeStatusExtension](
		AgentNamespace, NodeStatusType, node, &resourcepb.NodeStatusSpec{})
}

// NodeStatusExtension provides the resource definition.
type NodeStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (NodeStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type: NodeStatusType,
		// The automatic "ns" alias would shadow namespaces.
		SkipAutomaticAliases: true,
		Aliases:              []resource.Type{"node", "nodes", "nodestatus", "nodestatuses"},
		DefaultNamespace:     AgentNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Role", JSONPath: "{.role}"},
			{Name: "Build", JSONPath: "{.version}"},
			{Name: "Config", JSONPath: "{.configGeneration}"},
			{Name: "Addresses", JSONPath: "{.addresses[*]}"},
		},
	}
}

// EndpointHealthType is the result of probing one configured endpoint; its ID is the check's name.
const EndpointHealthType = resource.Type("EndpointHealths.agent.talos-lb.dev")

// EndpointHealth is the result of probing one configured endpoint.
type EndpointHealth = typed.Resource[Spec[resourcepb.EndpointHealthSpec, *resourcepb.EndpointHealthSpec], EndpointHealthExtension]

// NewEndpointHealth returns an empty EndpointHealth for the named check.
func NewEndpointHealth(name string) *EndpointHealth {
	return newResource[resourcepb.EndpointHealthSpec, *resourcepb.EndpointHealthSpec, EndpointHealthExtension](
		AgentNamespace, EndpointHealthType, name, &resourcepb.EndpointHealthSpec{})
}

// EndpointHealthExtension provides the resource definition.
type EndpointHealthExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (EndpointHealthExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             EndpointHealthType,
		Aliases:          []resource.Type{"health", "healths"},
		DefaultNamespace: AgentNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Kind", JSONPath: "{.kind}"},
			{Name: "Address", JSONPath: "{.address}"},
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Latency us", JSONPath: "{.latencyUs}"},
			{Name: "Last Error", JSONPath: "{.lastError}"},
		},
	}
}

func init() {
	registerType(NodeStatusType, &NodeStatus{})
	registerType(EndpointHealthType, &EndpointHealth{})
}

// AgentLifecycleType tells controllers the agent is stopping.
const AgentLifecycleType = resource.Type("AgentLifecycles.agent.talos-lb.dev")

// AgentLifecycleID is the ID of the only AgentLifecycle.
const AgentLifecycleID = resource.ID("agent")

// AgentLifecycle tells controllers the agent is stopping.
type AgentLifecycle = typed.Resource[Spec[resourcepb.AgentLifecycleSpec, *resourcepb.AgentLifecycleSpec], AgentLifecycleExtension]

// NewAgentLifecycle returns an empty AgentLifecycle.
func NewAgentLifecycle() *AgentLifecycle {
	return newResource[resourcepb.AgentLifecycleSpec, *resourcepb.AgentLifecycleSpec, AgentLifecycleExtension](
		AgentNamespace, AgentLifecycleType, AgentLifecycleID, &resourcepb.AgentLifecycleSpec{})
}

// AgentLifecycleExtension provides the resource definition.
type AgentLifecycleExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (AgentLifecycleExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             AgentLifecycleType,
		Aliases:          []resource.Type{"lifecycle"},
		DefaultNamespace: AgentNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Shutting Down", JSONPath: "{.shuttingDown}"},
			{Name: "Since", JSONPath: "{.since}"},
		},
	}
}

func init() {
	registerType(AgentLifecycleType, &AgentLifecycle{})
}

// IPVSBackendCheckID is the EndpointHealth ID of the probe of one VIP peer's
// API server as an IPVS backend; the "ipvs-" prefix is reserved for these.
func IPVSBackendCheckID(peer string) resource.ID {
	return "ipvs-" + peer
}

// MemberType is another agent as the liveness gossip sees it; its ID is the node name.
const MemberType = resource.Type("Members.agent.talos-lb.dev")

// Member is another agent as the liveness gossip sees it.
type Member = typed.Resource[Spec[resourcepb.MemberSpec, *resourcepb.MemberSpec], MemberExtension]

// NewMember returns an empty Member.
func NewMember(node string) *Member {
	return newResource[resourcepb.MemberSpec, *resourcepb.MemberSpec, MemberExtension](
		AgentNamespace, MemberType, node, &resourcepb.MemberSpec{})
}

// MemberExtension provides the resource definition.
type MemberExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (MemberExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             MemberType,
		Aliases:          []resource.Type{"member", "members"},
		DefaultNamespace: AgentNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Address", JSONPath: "{.address}"},
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Since", JSONPath: "{.since}"},
			{Name: "Self", JSONPath: "{.self}"},
		},
	}
}

func init() {
	registerType(MemberType, &Member{})
}
