package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// ProxyConfigType is one local TCP proxy the agent was told to run; its ID is the proxy's name.
const ProxyConfigType = resource.Type("ProxyConfigs.config.talos-lb.dev")

// ProxyConfig is one local TCP proxy the agent was told to run.
type ProxyConfig = typed.Resource[Spec[resourcepb.ProxyConfigSpec, *resourcepb.ProxyConfigSpec], ProxyConfigExtension]

// NewProxyConfig returns an empty ProxyConfig for the named proxy.
func NewProxyConfig(name string) *ProxyConfig {
	return newResource[resourcepb.ProxyConfigSpec, *resourcepb.ProxyConfigSpec, ProxyConfigExtension](
		ConfigNamespace, ProxyConfigType, name, &resourcepb.ProxyConfigSpec{})
}

// ProxyConfigExtension provides the resource definition.
type ProxyConfigExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (ProxyConfigExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             ProxyConfigType,
		Aliases:          []resource.Type{"proxyconfig", "proxyconfigs"},
		DefaultNamespace: ConfigNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Listen", JSONPath: "{.listen[*]}"},
			{Name: "Upstreams", JSONPath: "{.upstreams[*]}"},
			{Name: "Check", JSONPath: "{.healthCheck.kind}"},
			{Name: "Balance", JSONPath: "{.balance}"},
		},
	}
}

// ProxyStatusType is what one local proxy does; its ID is the proxy's name.
const ProxyStatusType = resource.Type("ProxyStatuses.agent.talos-lb.dev")

// ProxyStatus is what one local proxy does: listeners, state and counters.
type ProxyStatus = typed.Resource[Spec[resourcepb.ProxyStatusSpec, *resourcepb.ProxyStatusSpec], ProxyStatusExtension]

// NewProxyStatus returns an empty ProxyStatus for the named proxy.
func NewProxyStatus(name string) *ProxyStatus {
	return newResource[resourcepb.ProxyStatusSpec, *resourcepb.ProxyStatusSpec, ProxyStatusExtension](
		AgentNamespace, ProxyStatusType, name, &resourcepb.ProxyStatusSpec{})
}

// ProxyStatusExtension provides the resource definition.
type ProxyStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (ProxyStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             ProxyStatusType,
		Aliases:          []resource.Type{"proxy", "proxies"},
		DefaultNamespace: AgentNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Listen", JSONPath: "{.listen[*]}"},
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Healthy", JSONPath: "{.healthyUpstreams}"},
			{Name: "Upstreams", JSONPath: "{.upstreams}"},
			{Name: "Active", JSONPath: "{.active}"},
			{Name: "Total", JSONPath: "{.total}"},
			{Name: "Failed Dials", JSONPath: "{.failedDials}"},
			{Name: "Retries", JSONPath: "{.retries}"},
			{Name: "Refused", JSONPath: "{.refused}"},
		},
	}
}

// UpstreamStatusType is one upstream of one local proxy; its ID is "<proxy>/<host:port>".
const UpstreamStatusType = resource.Type("UpstreamStatuses.agent.talos-lb.dev")

// UpstreamStatus is one upstream of one local proxy: health, latency and counters.
type UpstreamStatus = typed.Resource[Spec[resourcepb.UpstreamStatusSpec, *resourcepb.UpstreamStatusSpec], UpstreamStatusExtension]

// UpstreamStatusID names the status of address as an upstream of proxy.
func UpstreamStatusID(proxy, address string) resource.ID {
	return proxy + "/" + address
}

// NewUpstreamStatus returns an empty UpstreamStatus for address as an upstream of proxy.
func NewUpstreamStatus(proxy, address string) *UpstreamStatus {
	return newResource[resourcepb.UpstreamStatusSpec, *resourcepb.UpstreamStatusSpec, UpstreamStatusExtension](
		AgentNamespace, UpstreamStatusType, UpstreamStatusID(proxy, address), &resourcepb.UpstreamStatusSpec{})
}

// UpstreamStatusExtension provides the resource definition.
type UpstreamStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (UpstreamStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             UpstreamStatusType,
		Aliases:          []resource.Type{"upstream", "upstreams"},
		DefaultNamespace: AgentNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Preferred", JSONPath: "{.preferred}"},
			{Name: "Pushed", JSONPath: "{.pushed}"},
			{Name: "Latency us", JSONPath: "{.latencyUs}"},
			{Name: "Active", JSONPath: "{.active}"},
			{Name: "Total", JSONPath: "{.total}"},
			{Name: "Failed Dials", JSONPath: "{.failedDials}"},
			{Name: "Since", JSONPath: "{.since}"},
			{Name: "Last Error", JSONPath: "{.lastError}"},
		},
	}
}

func init() {
	registerType(ProxyConfigType, &ProxyConfig{})
	registerType(ProxyStatusType, &ProxyStatus{})
	registerType(UpstreamStatusType, &UpstreamStatus{})
}
