package daemon

import (
	"maps"
	"slices"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/talos-lb/talos-lb/agent/l2svc"
	"github.com/talos-lb/talos-lb/agent/l2svc/responder"
	"github.com/talos-lb/talos-lb/agent/push"
	"github.com/talos-lb/talos-lb/pkg/netutil"
)

// l2Service is L2 announcement of the pushed service IPs: the ownership
// controller and the raw-socket responder it drives. It runs on every node
// whether or not anything is pushed: with no L2 service IP it opens no socket.
type l2Service struct {
	responder *responder.Responder
	ownership *l2svc.OwnershipController
	announcer push.Announcer
}

func newL2Service(st state.State, nodeName string, logger *zap.Logger) *l2Service {
	r := responder.New(responder.Options{Logger: logger})

	return &l2Service{
		responder: r,
		ownership: &l2svc.OwnershipController{
			NodeName:   nodeName,
			Responder:  r,
			Interfaces: l2svc.NetInterfaces{},
			Changes:    netutil.NetlinkAddresses{},
		},
		announcer: l2svc.Announcer{State: st},
	}
}

func (s *l2Service) controllers() []controller.Controller {
	return []controller.Controller{s.ownership}
}

// close stops answering; call it after the runtime stopped.
func (s *l2Service) close() {
	s.responder.Close() //nolint:errcheck // it never fails
}

// announcers lists, in the push answer, the service IPs every announcing
// capability (L2 ownership, BGP) announces, each once, sorted.
type announcers []push.Announcer

// Announcing implements push.Announcer.
func (a announcers) Announcing() []string {
	seen := map[string]bool{}

	for _, an := range a {
		if an == nil {
			continue
		}

		for _, ip := range an.Announcing() {
			seen[ip] = true
		}
	}

	return slices.Sorted(maps.Keys(seen))
}
