package resources

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// AgentConfigType is the last good configuration the agent runs with.
const AgentConfigType = resource.Type("AgentConfigs.config.talos-lb.dev")

// AgentConfigID is the ID of the only AgentConfig.
const AgentConfigID = resource.ID("agent")

// AgentConfig is the last good configuration the agent runs with.
type AgentConfig = typed.Resource[Spec[resourcepb.AgentConfigSpec, *resourcepb.AgentConfigSpec], AgentConfigExtension]

// NewAgentConfig returns an empty AgentConfig.
func NewAgentConfig() *AgentConfig {
	return newResource[resourcepb.AgentConfigSpec, *resourcepb.AgentConfigSpec, AgentConfigExtension](
		ConfigNamespace, AgentConfigType, AgentConfigID, &resourcepb.AgentConfigSpec{})
}

// AgentConfigExtension provides the resource definition.
type AgentConfigExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (AgentConfigExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             AgentConfigType,
		Aliases:          []resource.Type{"config", "configs"},
		DefaultNamespace: ConfigNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Node", JSONPath: "{.nodeName}"},
			{Name: "Role", JSONPath: "{.role}"},
			{Name: "Checks", JSONPath: "{.healthChecks[*].name}"},
			{Name: "Sha256", JSONPath: "{.sha256}"},
		},
	}
}

// ConfigStatusType says what happened to the config file the last time it was read.
const ConfigStatusType = resource.Type("ConfigStatuses.config.talos-lb.dev")

// ConfigStatusID is the ID of the only ConfigStatus.
const ConfigStatusID = resource.ID("agent")

// ConfigStatus says what happened to the config file the last time it was read.
type ConfigStatus = typed.Resource[Spec[resourcepb.ConfigStatusSpec, *resourcepb.ConfigStatusSpec], ConfigStatusExtension]

// NewConfigStatus returns an empty ConfigStatus.
func NewConfigStatus() *ConfigStatus {
	return newResource[resourcepb.ConfigStatusSpec, *resourcepb.ConfigStatusSpec, ConfigStatusExtension](
		ConfigNamespace, ConfigStatusType, ConfigStatusID, &resourcepb.ConfigStatusSpec{})
}

// ConfigStatusExtension provides the resource definition.
type ConfigStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (ConfigStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             ConfigStatusType,
		Aliases:          []resource.Type{"configstatuses"},
		DefaultNamespace: ConfigNamespace,
		PrintColumns: []meta.PrintColumn{
			{Name: "Generation", JSONPath: "{.generation}"},
			{Name: "Applied", JSONPath: "{.appliedAt}"},
			{Name: "Last Error", JSONPath: "{.lastError}"},
		},
	}
}

func init() {
	registerType(AgentConfigType, &AgentConfig{})
	registerType(ConfigStatusType, &ConfigStatus{})
}
