package ipvs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are what an operator graphs about IPVS balancing.
type Metrics struct {
	available   prometheus.Gauge
	programmed  prometheus.Gauge
	weight      *prometheus.GaugeVec
	connections *prometheus.GaugeVec
	changes     *prometheus.CounterVec
	failures    prometheus.Counter

	// series remembers the per-real-server label sets last set, so vanished ones are
	// deleted rather than reset (a reset would blank every series for one scrape).
	series map[[2]string]bool
}

// NewMetrics registers the IPVS metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		available: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "ipvs", Name: "available",
			Help: "1 when the kernel has IPVS (ip_vs loaded), 0 when not; absent until a service is wanted.",
		}),
		programmed: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "ipvs", Name: "services_programmed",
			Help: "IPVS services the kernel runs exactly as wanted.",
		}),
		weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "ipvs", Name: "real_server_weight",
			Help: "Weight of each real server in the kernel; 0 means draining.",
		}, []string{"service", "real_server"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "ipvs", Name: "connections",
			Help: "Connections per real server: active (established) and inactive (other states).",
		}, []string{"service", "real_server", "state"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "talos_lb", Subsystem: "ipvs", Name: "kernel_changes_total",
			Help: "Changes made to the kernel's IPVS table, by operation; steady growth means flapping.",
		}, []string{"op"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "talos_lb", Subsystem: "ipvs", Name: "reconcile_failures_total",
			Help: "Reconciles that left the kernel or the masquerade rules short of what was wanted.",
		}),
		series: map[[2]string]bool{},
	}

	reg.MustRegister(m.available, m.programmed, m.weight, m.connections, m.changes, m.failures)

	return m
}

func (m *Metrics) setAvailable(ok bool) {
	if m == nil {
		return
	}

	v := 0.0
	if ok {
		v = 1
	}

	m.available.Set(v)
}

func (m *Metrics) changed(op string) {
	if m == nil {
		return
	}

	m.changes.WithLabelValues(op).Inc()
}

func (m *Metrics) failed() {
	if m == nil {
		return
	}

	m.failures.Inc()
}

// observe sets the gauges from one reconcile's outcome and the kernel's services.
func (m *Metrics) observe(all []*wanted, kernel map[Key]Service) {
	if m == nil {
		return
	}

	programmed := 0
	seen := map[[2]string]bool{}

	for _, w := range all {
		if w.state != StateProgrammed {
			continue
		}

		programmed++

		for _, rs := range kernel[w.svc.Key].RealServers {
			labels := [2]string{w.id, rs.Address.String()}
			seen[labels] = true

			m.weight.WithLabelValues(labels[0], labels[1]).Set(float64(rs.Weight))
			m.connections.WithLabelValues(labels[0], labels[1], "active").Set(float64(rs.ActiveConnections))
			m.connections.WithLabelValues(labels[0], labels[1], "inactive").Set(float64(rs.InactiveConnections))
		}
	}

	for labels := range m.series {
		if !seen[labels] {
			m.weight.DeleteLabelValues(labels[0], labels[1])
			m.connections.DeleteLabelValues(labels[0], labels[1], "active")
			m.connections.DeleteLabelValues(labels[0], labels[1], "inactive")
		}
	}

	m.series = seen
	m.programmed.Set(float64(programmed))
}
