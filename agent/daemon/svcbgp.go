package daemon

import (
	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/state"

	"github.com/talos-lb/talos-lb/agent/push"
	"github.com/talos-lb/talos-lb/agent/svcbgp"
)

// bgpService is BGP announcement of the pushed service IPs: the controller
// turning them into BGP advertisements for the speaker (bgp.Controller, which
// also runs the peers the controller pushes), and the list of IPs announced
// for the push answer.
type bgpService struct {
	controller *svcbgp.Controller
	announcer  push.Announcer
}

func newBGPService(st state.State, nodeName string) *bgpService {
	return &bgpService{
		controller: &svcbgp.Controller{NodeName: nodeName},
		announcer:  svcbgp.Announcer{State: st},
	}
}

func (s *bgpService) controllers() []controller.Controller {
	return []controller.Controller{s.controller}
}
