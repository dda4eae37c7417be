package health

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are what an operator graphs about health checks.
type Metrics struct {
	healthy  *prometheus.GaugeVec
	duration *prometheus.HistogramVec
	failures *prometheus.CounterVec
}

// NewMetrics registers the health check metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "health", Name: "endpoint_healthy",
			Help: "1 when the check's verdict is healthy, 0 when unhealthy or unknown.",
		}, []string{"check"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "talos_lb", Subsystem: "health", Name: "probe_duration_seconds",
			Help:    "Round trip of each probe.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"check"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "talos_lb", Subsystem: "health", Name: "probe_failures_total",
			Help: "Probes that failed.",
		}, []string{"check"}),
	}

	reg.MustRegister(m.healthy, m.duration, m.failures)

	return m
}

func (m *Metrics) observe(check, state string, latency time.Duration, err error) {
	if m == nil {
		return
	}

	v := 0.0
	if state == StateHealthy {
		v = 1
	}

	m.healthy.WithLabelValues(check).Set(v)
	m.duration.WithLabelValues(check).Observe(latency.Seconds())

	if err != nil {
		m.failures.WithLabelValues(check).Inc()
	}
}

func (m *Metrics) forget(check string) {
	if m == nil {
		return
	}

	m.healthy.DeleteLabelValues(check)
	m.duration.DeleteLabelValues(check)
	m.failures.DeleteLabelValues(check)
}
