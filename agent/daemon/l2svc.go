package daemon

import (
	"maps"
	"slices"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
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

func newL2Service(st state.State, nodeName string, reg prometheus.Registerer, logger *zap.Logger) *l2Service {
	r := responder.New(responder.Options{Logger: logger})
	an := l2svc.Announcer{State: st}

	// What an operator graphs next to a failover: frames sent per kind, and
	// how many service IPs this node answers for.
	frames := func(kind string, get func(responder.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "talos_lb", Subsystem: "l2", Name: "frames_total",
			Help:        "ARP/NDP frames the service IP responder sent or dropped, by kind.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(get(r.Stats())) })
	}

	reg.MustRegister(
		frames("arp_reply", func(s responder.Stats) uint64 { return s.ARPReplies }),
		frames("na_reply", func(s responder.Stats) uint64 { return s.NAReplies }),
		frames("gratuitous_arp", func(s responder.Stats) uint64 { return s.GratuitousARPs }),
		frames("unsolicited_na", func(s responder.Stats) uint64 { return s.UnsolicitedNAs }),
		frames("stale_request_dropped", func(s responder.Stats) uint64 { return s.Stale }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "talos_lb", Subsystem: "l2", Name: "pauses_total",
			Help: "Times the agent found it had not run for a while and held its answers.",
		}, func() float64 { return float64(r.Stats().Pauses) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "l2", Name: "owned_service_ips",
			Help: "Service IPs this node owns and answers ARP/NDP for.",
		}, func() float64 { return float64(len(an.Announcing())) }),
	)

	return &l2Service{
		responder: r,
		ownership: &l2svc.OwnershipController{
			NodeName:   nodeName,
			Responder:  r,
			Interfaces: l2svc.NetInterfaces{},
			Changes:    netutil.NetlinkAddresses{},
		},
		announcer: an,
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
