package app

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	leader         prometheus.Gauge
	services       prometheus.Gauge
	failedServices prometheus.Gauge
	poolUsed       *prometheus.GaugeVec
	passSeconds    prometheus.Histogram
	invalidObjects prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "controller", Name: "leader",
			Help: "1 while this replica leads (allocates and pushes).",
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "controller", Name: "services",
			Help: "LoadBalancer Services holding addresses from this controller.",
		}),
		failedServices: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "controller", Name: "services_failed",
			Help: "Our LoadBalancer Services whose last allocation failed.",
		}),
		poolUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "controller", Name: "pool_addresses_used",
			Help: "Addresses in use per pool and family.",
		}, []string{"pool", "family"}),
		passSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "talos_lb", Subsystem: "controller", Name: "pass_seconds",
			Help:    "Duration of a reconcile pass (allocation, status writes, desired state).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		invalidObjects: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "controller", Name: "config_objects_invalid",
			Help: "Configuration objects (pools, peers, advertisements) left out because they are invalid.",
		}),
	}

	reg.MustRegister(m.leader, m.services, m.failedServices, m.poolUsed, m.passSeconds, m.invalidObjects)

	return m
}
