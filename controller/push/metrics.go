package push

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Results counted in talos_lb_controller_pushes_total{result}.
const (
	resultAccepted    = "accepted"
	resultRejected    = "rejected"
	resultStale       = "stale"
	resultUnreachable = "unreachable"
)

type metrics struct {
	pushes  *prometheus.CounterVec
	latency prometheus.Histogram
	nodes   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "talos_lb", Subsystem: "controller", Name: "pushes_total",
			Help: "Pushes to agents, by result (accepted, rejected, stale, unreachable).",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "talos_lb", Subsystem: "controller", Name: "push_duration_seconds",
			Help:    "Time from sending a push to the agent's answer (or the failure).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12), // 1 ms .. ~60 s
		}),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "controller", Name: "push_nodes",
			Help: "Nodes by push state (synced, pending, rejected, unreachable).",
		}, []string{"state"}),
	}

	for _, r := range []string{resultAccepted, resultRejected, resultStale, resultUnreachable} {
		m.pushes.WithLabelValues(r)
	}

	for _, s := range States {
		m.nodes.WithLabelValues(s)
	}

	if reg != nil {
		// A replica that leads again makes a new pusher: it shares the
		// collectors of the one before.
		m.pushes = register(reg, m.pushes)
		m.latency = register(reg, m.latency)
		m.nodes = register(reg, m.nodes)
	}

	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}

		panic(err)
	}

	return c
}
