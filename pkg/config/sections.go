package config

import (
	"net"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Role is what a node runs, which decides what it may take over.
type Role string

const (
	RoleControlPlane Role = "controlplane"
	RoleWorker       Role = "worker"
)

// Node identifies this agent among its peers.
type Node struct {
	Name string `yaml:"name"`
	Role Role   `yaml:"role"`
}

func (n *Node) defaults(s scope) {
	if !s.has("name") {
		// On failure the name stays empty and validation says so.
		n.Name, _ = hostname()
	}
}

func (n *Node) validate(s scope) {
	switch {
	case n.Name == "":
		s.fail("name", "required (defaults to the hostname)")
	case len(n.Name) > 253 || strings.IndexFunc(n.Name, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0:
		// Peers log and compare it, so keep it a plain token.
		s.fail("name", "must be at most 253 printable characters without spaces, got %q", n.Name)
	}
	switch n.Role {
	case RoleControlPlane, RoleWorker:
	case "":
		s.fail("role", "required (controlplane or worker)")
	default:
		s.fail("role", "unknown role %q (controlplane or worker)", n.Role)
	}
}

// API is the agent's gRPC endpoint. It is always mutual TLS: peers can
// move VIPs, so an unauthenticated listener is not an option.
type API struct {
	Listen string `yaml:"listen"`
	TLS    TLS    `yaml:"tls"`
}

func (a *API) defaults(s scope) {
	if !s.has("listen") {
		a.Listen = "[::]:50070"
	}
}

func (a *API) validate(s scope) {
	checkListen(s, "listen", a.Listen)
	a.TLS.validate(s.at("tls"))
}

// TLS holds the paths of the agent's certificate material. Only the paths
// are checked here; the files are read when the listener starts.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

func (t *TLS) validate(s scope) {
	checkAbsPath(s, "ca", t.CA)
	checkAbsPath(s, "cert", t.Cert)
	checkAbsPath(s, "key", t.Key)
}

// Metrics is the Prometheus endpoint.
type Metrics struct {
	Listen string `yaml:"listen"`
	// Enabled defaults to true. It is a plain bool, so the default is
	// decided by whether the file sets it; marshalling must therefore keep
	// it (no omitempty) or a false would come back as true.
	Enabled bool `yaml:"enabled"`
}

func (m *Metrics) defaults(s scope) {
	if !s.has("listen") {
		m.Listen = "127.0.0.1:9470"
	}
	if !s.has("enabled") {
		m.Enabled = true
	}
}

func (m *Metrics) validate(s scope) {
	if m.Listen == "" {
		s.fail("listen", "required; to turn metrics off set enabled: false")
		return
	}
	checkListen(s, "listen", m.Listen)
}

// CheckKind is the protocol a health check speaks.
type CheckKind string

const (
	CheckHTTPS CheckKind = "https"
	CheckHTTP  CheckKind = "http"
	CheckTCP   CheckKind = "tcp"
)

// HealthCheck probes a local service; its result gates what this node
// advertises.
type HealthCheck struct {
	Name    string    `yaml:"name"`
	Kind    CheckKind `yaml:"kind"`
	Address string    `yaml:"address"`
	// Path is for http and https.
	Path string `yaml:"path"`
	// CAFile, InsecureSkipVerify and ServerName are for https.
	CAFile             string   `yaml:"caFile"`
	InsecureSkipVerify bool     `yaml:"insecureSkipVerify"`
	ServerName         string   `yaml:"serverName"`
	Interval           Duration `yaml:"interval"`
	Timeout            Duration `yaml:"timeout"`
	// Rise and Fall are how many consecutive results flip the state, so a
	// single slow probe does not move traffic.
	Rise int `yaml:"rise"`
	Fall int `yaml:"fall"`
}

// Bounds of the probe cadence: faster floods the service, slower makes
// failover too late to matter.
const (
	minInterval = 100 * time.Millisecond
	maxInterval = time.Minute
)

var checkName = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)

func (h *HealthCheck) defaults(s scope) {
	if !s.has("path") && (h.Kind == CheckHTTP || h.Kind == CheckHTTPS) {
		h.Path = "/readyz"
	}
	if !s.has("interval") {
		h.Interval.Duration = time.Second
	}
	// Capped by the interval, so that setting only a short interval does
	// not fail validation on a timeout the user never wrote.
	if !s.has("timeout") {
		h.Timeout.Duration = min(h.Interval.Duration, time.Second)
	}
	if !s.has("rise") {
		h.Rise = 2
	}
	if !s.has("fall") {
		h.Fall = 2
	}
}

func (h *HealthCheck) validate(s scope) {
	switch {
	case h.Name == "":
		s.fail("name", "required")
	case !checkName.MatchString(h.Name):
		// Names end up in metric labels and logs.
		s.fail("name", "must be 1-63 characters of a-z, 0-9 and '-', got %q", h.Name)
	}

	web := h.Kind == CheckHTTP || h.Kind == CheckHTTPS
	switch h.Kind {
	case CheckHTTPS, CheckHTTP, CheckTCP:
	case "":
		s.fail("kind", "required (https, http or tcp)")
	default:
		s.fail("kind", "unknown kind %q (https, http or tcp)", h.Kind)
	}

	if h.Address == "" {
		s.fail("address", "required (host:port)")
	} else if host, ok := checkHostPort(s, "address", h.Address); ok && host == "" {
		s.fail("address", "needs a host, got %q", h.Address)
	}

	switch {
	case web && !strings.HasPrefix(h.Path, "/"):
		s.fail("path", "must start with '/', got %q", h.Path)
	case !web && h.Kind != "" && h.Path != "":
		s.fail("path", "only valid for http and https checks")
	}

	if h.Kind != CheckHTTPS && h.Kind != "" {
		if h.CAFile != "" {
			s.fail("caFile", "only valid for https checks")
		}
		if h.InsecureSkipVerify {
			s.fail("insecureSkipVerify", "only valid for https checks")
		}
		if h.ServerName != "" {
			s.fail("serverName", "only valid for https checks")
		}
	}
	if h.CAFile != "" {
		checkAbsPath(s, "caFile", h.CAFile)
		if h.InsecureSkipVerify {
			s.fail("insecureSkipVerify", "cannot be combined with caFile: either verify against it or do not verify")
		}
	}

	if h.Interval.Duration < minInterval || h.Interval.Duration > maxInterval {
		s.fail("interval", "must be between 100ms and 1m, got %s", h.Interval)
	}
	switch {
	case h.Timeout.Duration <= 0:
		s.fail("timeout", "must be positive, got %s", h.Timeout)
	case h.Timeout.Duration > h.Interval.Duration:
		// Probes would overlap.
		s.fail("timeout", "must not exceed interval (%s), got %s", h.Interval, h.Timeout)
	}
	checkRange(s, "rise", h.Rise, 1, 10)
	checkRange(s, "fall", h.Fall, 1, 10)
}

func checkRange(s scope, field string, v, lo, hi int) {
	if v < lo || v > hi {
		s.fail(field, "must be between %d and %d, got %d", lo, hi, v)
	}
}

// checkAbsPath requires absolute paths because the agent's working
// directory is not something anyone configures on purpose.
func checkAbsPath(s scope, field, p string) {
	switch {
	case p == "":
		s.fail(field, "required")
	case !path.IsAbs(p):
		s.fail(field, "must be an absolute path, got %q", p)
	}
}

// checkListen accepts only IP literals (or nothing, for all addresses):
// a hostname would make what we bind depend on DNS at startup.
func checkListen(s scope, field, addr string) {
	if addr == "" {
		s.fail(field, "required")
		return
	}
	host, ok := checkHostPort(s, field, addr)
	if !ok || host == "" {
		return
	}
	if _, err := netip.ParseAddr(host); err != nil {
		s.fail(field, "host must be an IP address, got %q", host)
	}
}

// checkHostPort wants a numeric port: service names would depend on
// /etc/services, which a Talos node may not have.
func checkHostPort(s scope, field, addr string) (host string, ok bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		s.fail(field, "want host:port, got %q", addr)
		return "", false
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		s.fail(field, "port must be a number from 1 to 65535, got %q", port)
		return "", false
	}
	if strings.ContainsFunc(host, unicode.IsSpace) {
		s.fail(field, "host must not contain spaces, got %q", host)
		return "", false
	}
	return host, true
}
