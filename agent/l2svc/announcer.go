package l2svc

import (
	"context"
	"time"

	"github.com/cosi-project/runtime/pkg/state"
)

// Announcer lists the L2 service IPs this node answers for, for the push
// answer (agent/push.Announcer). It reads the L2Ownership resources, so it
// says what the ownership controller last decided.
type Announcer struct {
	State state.State
}

// Announcing implements push.Announcer; it lists nothing when the state
// cannot be read within a second.
func (a Announcer) Announcing() []string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()

	out, err := owned(ctx, a.State)
	if err != nil {
		return nil
	}

	return out
}
