package config

import (
	"net"
	"net/netip"
	"time"
)

// Proxy is a TCP load balancer on loopback for this node's own clients,
// the Kubernetes API above all (what Talos's KubePrism does on 7445).
type Proxy struct {
	Name string `yaml:"name"`
	// Listen holds loopback addresses only: the proxy serves this node.
	Listen    []string `yaml:"listen"`
	Upstreams []string `yaml:"upstreams"`
	// PushedUpstreams adds the Kubernetes API servers the controller pushes
	// (the ready endpoints of default/kubernetes) to Upstreams. Upstreams
	// stay required: the node must reach the API before any push, since the
	// controller runs in the cluster.
	PushedUpstreams bool       `yaml:"pushedUpstreams"`
	Check           ProxyCheck `yaml:"healthCheck"`
	Balance         Balance    `yaml:"balance"`
	// ConnectTimeout bounds all attempts for one client; DialTimeout one attempt.
	ConnectTimeout Duration `yaml:"connectTimeout"`
	DialTimeout    Duration `yaml:"dialTimeout"`
	DrainPeriod    Duration `yaml:"drainPeriod"`
	Keepalive      Duration `yaml:"keepalive"`
	UserTimeout    Duration `yaml:"userTimeout"`
}

// Balance is how a proxy spreads clients inside its lowest-latency tier.
type Balance string

const (
	BalanceRoundRobin       Balance = "round-robin"
	BalanceLeastConnections Balance = "least-connections"
)

// DefaultProxyListen is next to KubePrism's 127.0.0.1:7445, so both can run
// while a cluster moves over.
const DefaultProxyListen = "127.0.0.1:7446"

func defaultProxies(s scope, proxies []Proxy) {
	for i := range proxies {
		proxies[i].defaults(s.index(i))
	}
}

// validateProxies also checks what no single proxy can: unique names, and
// no address listened on twice.
func validateProxies(s scope, proxies []Proxy) {
	names := map[string]int{}
	listeners := map[string]int{}
	for i := range proxies {
		ps := s.index(i)
		p := &proxies[i]
		p.validate(ps)
		if j, dup := names[p.Name]; dup && p.Name != "" {
			ps.fail("name", "duplicate name %q (first in proxies[%d])", p.Name, j)
		}
		names[p.Name] = i
		for k, addr := range p.Listen {
			if j, dup := listeners[addr]; dup && j != i {
				ps.at("listen").index(k).fail("", "already listened on by proxies[%d]", j)
			}
			listeners[addr] = i
		}
	}
}

func (p *Proxy) defaults(s scope) {
	if !s.has("listen") {
		p.Listen = []string{DefaultProxyListen}
	}
	p.Check.defaults(s.at("healthCheck"))
	if !s.has("balance") {
		p.Balance = BalanceRoundRobin
	}
	// client-go gives up on a TLS handshake after 10 s: reaching an upstream
	// must leave it time to do one.
	if !s.has("connectTimeout") {
		p.ConnectTimeout.Duration = 5 * time.Second
	}
	if !s.has("dialTimeout") {
		p.DialTimeout.Duration = min(p.ConnectTimeout.Duration, time.Second)
	}
	if !s.has("keepalive") {
		p.Keepalive.Duration = 10 * time.Second
	}
	if !s.has("userTimeout") {
		p.UserTimeout.Duration = 30 * time.Second
	}
}

func (p *Proxy) validate(s scope) {
	switch {
	case p.Name == "":
		s.fail("name", "required")
	case !checkName.MatchString(p.Name):
		s.fail("name", "must be 1-63 characters of a-z, 0-9 and '-', got %q", p.Name)
	}

	if len(p.Listen) == 0 {
		s.fail("listen", "required (loopback host:port, e.g. %s)", DefaultProxyListen)
	}
	for i, addr := range p.Listen {
		checkLoopback(s.at("listen").index(i), addr)
	}
	checkUnique(s, "listen", p.Listen)

	if len(p.Upstreams) == 0 {
		s.fail("upstreams", "required (host:port of each API server)")
	}
	for i, addr := range p.Upstreams {
		us := s.at("upstreams").index(i)
		if host, ok := checkHostPort(us, "", addr); ok && host == "" {
			us.fail("", "needs a host, got %q", addr)
		}
	}
	checkUnique(s, "upstreams", p.Upstreams)

	p.Check.validate(s.at("healthCheck"))

	switch p.Balance {
	case BalanceRoundRobin, BalanceLeastConnections:
	default:
		s.fail("balance", "unknown balance %q (round-robin or least-connections)", p.Balance)
	}

	switch {
	case p.ConnectTimeout.Duration <= 0:
		s.fail("connectTimeout", "must be positive, got %s", p.ConnectTimeout)
	case p.DialTimeout.Duration <= 0:
		s.fail("dialTimeout", "must be positive, got %s", p.DialTimeout)
	case p.DialTimeout.Duration > p.ConnectTimeout.Duration:
		s.fail("dialTimeout", "must not exceed connectTimeout (%s), got %s", p.ConnectTimeout, p.DialTimeout)
	}
	if p.DrainPeriod.Duration < 0 {
		s.fail("drainPeriod", "must not be negative, got %s", p.DrainPeriod)
	}
	checkDurationRange(s, "keepalive", p.Keepalive.Duration, time.Second, time.Hour)
	checkDurationRange(s, "userTimeout", p.UserTimeout.Duration, time.Second, 10*time.Minute)
}

// checkLoopback accepts 127.0.0.0/8 and ::1 only: anything else would offer
// the node's API credentials-free path to its neighbours.
func checkLoopback(s scope, addr string) {
	host, ok := checkHostPort(s, "", addr)
	if !ok {
		return
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() || ip.Zone() != "" {
		s.fail("", "must be a loopback address (127.0.0.0/8 or ::1), got %q", host)
	}
}

func checkUnique(s scope, field string, values []string) {
	first := map[string]int{}
	for i, v := range values {
		if j, dup := first[v]; dup {
			s.at(field).index(i).fail("", "duplicate of %s[%d]", field, j)
			continue
		}
		first[v] = i
	}
}

func checkDurationRange(s scope, field string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		s.fail(field, "must be between %s and %s, got %s", lo, hi, d)
	}
}

// ProxyCheck is how a proxy probes each of its upstreams: a HealthCheck
// whose name and address are the upstream's, so both share one set of rules.
type ProxyCheck struct {
	Kind               CheckKind `yaml:"kind"`
	Path               string    `yaml:"path"`
	CAFile             string    `yaml:"caFile"`
	InsecureSkipVerify bool      `yaml:"insecureSkipVerify"`
	ServerName         string    `yaml:"serverName"`
	Interval           Duration  `yaml:"interval"`
	Timeout            Duration  `yaml:"timeout"`
	Rise               int       `yaml:"rise"`
	Fall               int       `yaml:"fall"`
}

// HealthCheck is the check of one upstream.
func (c *ProxyCheck) HealthCheck(name, address string) HealthCheck {
	return HealthCheck{
		Name: name, Kind: c.Kind, Address: address, Path: c.Path,
		CAFile: c.CAFile, InsecureSkipVerify: c.InsecureSkipVerify, ServerName: c.ServerName,
		Interval: c.Interval, Timeout: c.Timeout, Rise: c.Rise, Fall: c.Fall,
	}
}

func (c *ProxyCheck) defaults(s scope) {
	// TCP works without any certificate material; https needs the cluster CA.
	if !s.has("kind") {
		c.Kind = CheckTCP
	}
	h := c.HealthCheck("", "")
	h.defaults(s)
	// Half a second, not HealthCheck's second, keeps a black-holed upstream's
	// ejection near 2 s with the default interval and fall.
	if !s.has("timeout") {
		h.Timeout.Duration = min(h.Interval.Duration, 500*time.Millisecond)
	}
	c.Path, c.Interval, c.Timeout, c.Rise, c.Fall = h.Path, h.Interval, h.Timeout, h.Rise, h.Fall
}

// validate checks the fields through HealthCheck's rules; the placeholder
// name and address always pass, since upstreams are checked on their own.
func (c *ProxyCheck) validate(s scope) {
	h := c.HealthCheck("upstream", net.JoinHostPort("upstream", "1"))
	h.validate(s)
}
