package svcbgp

import (
	"context"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"

	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Announcer lists the service IPs this node announces over BGP, for the
// answer to the controller's push (agent/push.Announcer). It reads the
// ServiceBGPStatus resources: an IP counts once the node announces it under
// some advertisement and the speaker holds its prefix without error.
type Announcer struct {
	State state.State
}

// announcerTimeout bounds the read; the state is in memory.
const announcerTimeout = time.Second

// Announcing implements push.Announcer. It lists nothing when the state cannot be read.
func (a Announcer) Announcing() []string {
	ctx, cancel := context.WithTimeout(context.Background(), announcerTimeout)
	defer cancel()

	statuses, err := safe.StateListAll[*resources.ServiceBGPStatus](ctx, a.State)
	if err != nil {
		return nil
	}

	var out []string

	for st := range statuses.All() {
		s := st.TypedSpec().Value
		if s.GetAnnounced() && s.GetError() == "" {
			out = append(out, s.GetAddress())
		}
	}

	slices.Sort(out)

	return slices.Compact(out)
}
