package configwatch

import (
	"reflect"

	"google.golang.org/protobuf/types/known/durationpb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/config"
)

func healthCheckSpec(h config.HealthCheck) *resourcepb.HealthCheckSpec {
	return &resourcepb.HealthCheckSpec{
		Name:               h.Name,
		Kind:               string(h.Kind),
		Address:            h.Address,
		Path:               h.Path,
		CaFile:             h.CAFile,
		InsecureSkipVerify: h.InsecureSkipVerify,
		ServerName:         h.ServerName,
		Interval:           durationpb.New(h.Interval.Duration),
		Timeout:            durationpb.New(h.Timeout.Duration),
		Rise:               uint32(h.Rise), //nolint:gosec // validated to 1..10
		Fall:               uint32(h.Fall), //nolint:gosec // validated to 1..10
	}
}

// RestartRequired lists the settings that differ between the running and the
// new configuration but only take effect when the agent restarts (on Talos,
// any change of the ExtensionServiceConfig restarts the service anyway).
func RestartRequired(running, next *config.Config) []string {
	var out []string

	for _, f := range []struct {
		name     string
		old, new any
	}{
		{"node.name", running.Node.Name, next.Node.Name},
		{"api", running.API, next.API},
		{"metrics", running.Metrics, next.Metrics},
		{"stateDir", running.StateDir, next.StateDir},
	} {
		if !reflect.DeepEqual(f.old, f.new) {
			out = append(out, f.name)
		}
	}

	return out
}
