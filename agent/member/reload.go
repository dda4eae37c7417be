package member

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/config"
)

// ReloadFromFile returns a ReloadFunc that reads the join list from the file
// AgentConfig names, when its bytes are the ones AgentConfig says were
// accepted (otherwise the file changed again since, and the next AgentConfig
// brings the list). nodeName is the running node name, for files that leave
// node.name out. Without a members section the list is empty: gossip keeps
// running until the agent restarts.
func ReloadFromFile(nodeName string) ReloadFunc {
	return func(_ context.Context, spec *resourcepb.AgentConfigSpec) ([]string, error) {
		raw, err := os.ReadFile(spec.GetSourcePath())
		if err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}

		sum := sha256.Sum256(raw)
		if hex.EncodeToString(sum[:]) != spec.GetSha256() {
			return nil, fmt.Errorf("config %s changed since it was applied", spec.GetSourcePath())
		}

		cfg, err := config.ParseAs(raw, nodeName)
		if err != nil {
			return nil, err //nolint:wrapcheck // names the file's problems
		}

		if cfg.Members == nil {
			return []string{}, nil
		}

		return cfg.Members.JoinAddrs(), nil
	}
}
