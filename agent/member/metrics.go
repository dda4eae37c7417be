package member

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the gossip's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	members *prometheus.GaugeVec
	changes *prometheus.CounterVec
	joins   *prometheus.CounterVec
}

// Join results, as in talos_lb_member_joins_total{result}.
const (
	JoinOK     = "ok"
	JoinFailed = "failed"
)

// NewMetrics registers the gossip metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "talos_lb", Name: "members",
			Help: "Member resources (agents this node's gossip knows, itself included) by state: alive, suspect, dead or left.",
		}, []string{"state"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "talos_lb", Name: "member_state_changes_total",
			Help: "Changes of a member's state as this node saw them, by the state entered.",
		}, []string{"state"}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "talos_lb", Name: "member_joins_total",
			Help: "Attempts to join another agent's gossip (pushed nodes, configured join addresses), by result.",
		}, []string{"result"}),
	}

	for _, s := range States {
		m.members.WithLabelValues(s)
		m.changes.WithLabelValues(s)
	}

	m.joins.WithLabelValues(JoinOK)
	m.joins.WithLabelValues(JoinFailed)

	reg.MustRegister(m.members, m.changes, m.joins)

	return m
}

func (m *Metrics) stateChanged(to string) {
	if m != nil {
		m.changes.WithLabelValues(to).Inc()
	}
}

func (m *Metrics) joined(ok bool) {
	if m == nil {
		return
	}

	if ok {
		m.joins.WithLabelValues(JoinOK).Inc()
	} else {
		m.joins.WithLabelValues(JoinFailed).Inc()
	}
}

func (m *Metrics) published(byState map[string]int) {
	if m == nil {
		return
	}

	for _, s := range States {
		m.members.WithLabelValues(s).Set(float64(byState[s]))
	}
}
