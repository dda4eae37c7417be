package proxy

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/talos-lb/talos-lb/agent/health"
)

// Metrics exports what the proxies count. It reads their Stats at scrape
// time, so the data path never touches Prometheus.
type Metrics struct {
	mu      sync.Mutex
	proxies map[string]Balancer
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("talos_lb", "proxy", name), help, append([]string{"proxy"}, labels...), nil)
}

var (
	descServing     = desc("serving", "1 when the proxy has an upstream to send clients to, 0 when it refuses them.")
	descActive      = desc("connections_active", "Client connections open now.")
	descTotal       = desc("connections_total", "Client connections accepted.")
	descRetries     = desc("retries_total", "Dials that went on to another upstream after a failed one.")
	descRefused     = desc("refused_total", "Clients closed without reaching any upstream.")
	descUpHealthy   = desc("upstream_healthy", "1 when the upstream's verdict is healthy.", "upstream")
	descUpPreferred = desc("upstream_preferred", "1 when new clients go to the upstream (healthy, lowest-latency tier).", "upstream")
	descUpLatency   = desc("upstream_latency_seconds", "Smoothed round trip of the upstream's health probes.", "upstream")
	descUpActive    = desc("upstream_connections_active", "Connections open to the upstream now.", "upstream")
	descUpTotal     = desc("upstream_connections_total", "Connections made to the upstream.", "upstream")
	descUpFailed    = desc("upstream_failed_dials_total", "Dials to the upstream that failed.", "upstream")
)

// NewMetrics registers the proxy metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{proxies: map[string]Balancer{}}
	reg.MustRegister(m)

	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descServing, descActive, descTotal, descRetries, descRefused,
		descUpHealthy, descUpPreferred, descUpLatency, descUpActive, descUpTotal, descUpFailed,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()

	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue

	for name, b := range m.proxies {
		st := b.Stats()

		ch <- prometheus.MustNewConstMetric(descServing, gauge, boolValue(st.Serving), name)
		ch <- prometheus.MustNewConstMetric(descActive, gauge, float64(st.Active), name)
		ch <- prometheus.MustNewConstMetric(descTotal, counter, float64(st.Total), name)
		ch <- prometheus.MustNewConstMetric(descRetries, counter, float64(st.Retries), name)
		ch <- prometheus.MustNewConstMetric(descRefused, counter, float64(st.Refused), name)

		for _, u := range st.Upstreams {
			ch <- prometheus.MustNewConstMetric(descUpHealthy, gauge, boolValue(u.State == health.StateHealthy), name, u.Address)
			ch <- prometheus.MustNewConstMetric(descUpPreferred, gauge, boolValue(u.Preferred), name, u.Address)
			ch <- prometheus.MustNewConstMetric(descUpLatency, gauge, u.Latency.Seconds(), name, u.Address)
			ch <- prometheus.MustNewConstMetric(descUpActive, gauge, float64(u.Active), name, u.Address)
			ch <- prometheus.MustNewConstMetric(descUpTotal, counter, float64(u.Total), name, u.Address)
			ch <- prometheus.MustNewConstMetric(descUpFailed, counter, float64(u.FailedDials), name, u.Address)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}

	return 0
}

func (m *Metrics) track(name string, b Balancer) {
	if m == nil {
		return
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	m.proxies[name] = b
}

func (m *Metrics) forget(name string) {
	if m == nil {
		return
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	delete(m.proxies, name)
}
