package config

import (
	"github.com/talos-lb/talos-lb/pkg/community"
	"net/netip"
	"slices"
	"time"
)

// VIP is the control-plane VIP: one shared address held by one healthy
// control-plane node at a time, elected by the control-plane agents themselves.
type VIP struct {
	// Mode is "l2" (default: one elected holder answers ARP/NDP) or "bgp"
	// (every healthy control-plane node announces the VIP; routers spread
	// connections with ECMP).
	Mode VIPMode `yaml:"mode"`
	// Addresses are the VIPs (IPv4 and/or IPv6), added as /32 and /128.
	Addresses []string `yaml:"addresses"`
	// Link is the interface that carries the VIP.
	Link string `yaml:"link"`
	// HealthCheck names the healthChecks entry (the local API server) that
	// must be healthy for this node to hold the VIP.
	HealthCheck string   `yaml:"healthCheck"`
	Election    Election `yaml:"election"`
	Announce    Announce `yaml:"announce"`
	// Communities, LargeCommunities and LocalPref go with the VIP's BGP
	// announcement (mode bgp): "65000:100" or "no-export", "1:2:3", iBGP preference.
	Communities      []string `yaml:"communities"`
	LargeCommunities []string `yaml:"largeCommunities"`
	LocalPref        uint32   `yaml:"localPref"`
	// IPVS, when set (mode l2), makes the holder spread VIP connections over
	// every healthy API server with kernel IPVS instead of taking them all.
	IPVS *VIPIPVS `yaml:"ipvs"`
}

// Election configures the quorum election among control-plane agents (Raft).
type Election struct {
	// Listen is where this agent takes election traffic (mutual TLS with the agent certificate).
	Listen string `yaml:"listen"`
	// Peers are all control-plane agents, this one included.
	Peers []Peer `yaml:"peers"`
	// HeartbeatTimeout is how long followers wait for the leader before electing a new one.
	HeartbeatTimeout Duration `yaml:"heartbeatTimeout"`
	// LeaderLeaseTimeout is how long a leader keeps the VIP without hearing
	// from a quorum. At most half the heartbeat timeout, so an isolated leader
	// always lets go before the majority can elect another.
	LeaderLeaseTimeout Duration `yaml:"leaderLeaseTimeout"`
}

// Peer is one control-plane agent in the election.
type Peer struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
}

// Announce configures gratuitous ARP and unsolicited neighbour advertisements.
type Announce struct {
	// Count announcements are sent Interval apart when the VIP is taken over.
	Count    int      `yaml:"count"`
	Interval Duration `yaml:"interval"`
	// Refresh repeats one announcement this often while holding; 0s turns it off.
	Refresh Duration `yaml:"refresh"`
}

// VIPIPVS configures active-active API balancing on the VIP holder.
type VIPIPVS struct {
	// Port is the VIP port balanced (the API server port).
	Port int `yaml:"port"`
	// BackendPort is where the API servers listen; default: Port.
	BackendPort int `yaml:"backendPort"`
	// Scheduler: mh (default: every holder picks the same backend for a flow), rr, wrr, sh or lc.
	Scheduler string `yaml:"scheduler"`
}

// VIPMode says how the VIP reaches clients.
type VIPMode string

// VIP modes.
const (
	VIPModeL2  VIPMode = "l2"
	VIPModeBGP VIPMode = "bgp"
)

// DefaultElectionPort is the election port when listen is not set.
const DefaultElectionPort = "50071"

func (v *VIP) defaults(s scope) {
	if !s.has("mode") {
		v.Mode = VIPModeL2
	}

	if v.Mode == VIPModeBGP && !s.has("link") {
		v.Link = "lo"
	}

	es := s.at("election")
	if !es.has("listen") {
		v.Election.Listen = "[::]:" + DefaultElectionPort
	}

	if !es.has("heartbeatTimeout") {
		v.Election.HeartbeatTimeout.Duration = 200 * time.Millisecond
	}

	if !es.has("leaderLeaseTimeout") {
		v.Election.LeaderLeaseTimeout.Duration = v.Election.HeartbeatTimeout.Duration / 2
	}

	as := s.at("announce")
	if !as.has("count") {
		v.Announce.Count = 5
	}

	if !as.has("interval") {
		v.Announce.Interval.Duration = 250 * time.Millisecond
	}

	if !as.has("refresh") {
		v.Announce.Refresh.Duration = 10 * time.Second
	}

	if v.IPVS != nil {
		is := s.at("ipvs")
		if !is.has("backendPort") {
			v.IPVS.BackendPort = v.IPVS.Port
		}

		if !is.has("scheduler") {
			v.IPVS.Scheduler = "mh"
		}
	}
}

func (v *VIP) validate(s scope, c *Config) {
	if c.Node.Role != RoleControlPlane {
		s.fail("", "only control-plane nodes (node.role: controlplane) take part in the VIP")
	}

	if len(v.Addresses) == 0 {
		s.fail("addresses", "required: at least one IPv4 or IPv6 address")
	}

	for i, a := range v.Addresses {
		ip, err := netip.ParseAddr(a)

		switch {
		case err != nil:
			s.at("addresses").index(i).fail("", "not an IP address: %q", a)
		case ip.Zone() != "" || !ip.IsGlobalUnicast() && !ip.IsPrivate():
			s.at("addresses").index(i).fail("", "must be a unicast address without zone, got %q", a)
		}
	}

	checkUnique(s, "addresses", v.Addresses)

	if v.Link == "" {
		s.fail("link", "required: the interface that carries the VIP, e.g. eth0")
	}

	switch v.Mode {
	case VIPModeL2:
		v.Election.validate(s.at("election"), c.Node.Name)
	case VIPModeBGP:
		if c.BGP == nil {
			s.fail("mode", "bgp needs the bgp section (asn and peers)")
		}
	default:
		s.fail("mode", "unknown mode %q (l2 or bgp)", v.Mode)
	}

	if v.HealthCheck != "" && !slices.ContainsFunc(c.HealthChecks, func(h HealthCheck) bool { return h.Name == v.HealthCheck }) {
		s.fail("healthCheck", "no healthChecks entry is named %q", v.HealthCheck)
	}

	v.Announce.validate(s.at("announce"))

	if v.IPVS != nil {
		v.IPVS.validate(s.at("ipvs"), v.Mode)
	}

	for i, c := range v.Communities {
		if _, err := community.Parse(c); err != nil {
			s.at("communities").index(i).fail("", "%s", err)
		}
	}

	for i, c := range v.LargeCommunities {
		if _, err := community.ParseLarge(c); err != nil {
			s.at("largeCommunities").index(i).fail("", "%s", err)
		}
	}
}

func (e *Election) validate(s scope, self string) {
	checkListen(s, "listen", e.Listen)

	if len(e.Peers) == 0 {
		s.fail("peers", "required: every control-plane agent, this one included")
	}

	names := make([]string, 0, len(e.Peers))
	addrs := make([]string, 0, len(e.Peers))

	for i, p := range e.Peers {
		ps := s.at("peers").index(i)
		if p.Name == "" {
			ps.fail("name", "required (the peer's node.name)")
		}

		if p.Address == "" {
			ps.fail("address", "required (host:port of the peer's election listener)")
		} else if host, ok := checkHostPort(ps, "address", p.Address); ok {
			if _, err := netip.ParseAddr(host); err != nil {
				ps.fail("address", "host must be an IP address, got %q", host)
			}
		}

		names = append(names, p.Name)
		addrs = append(addrs, p.Address)
	}

	checkUniqueField(s, "peers", "name", names)
	checkUniqueField(s, "peers", "address", addrs)

	if len(e.Peers) > 0 && !slices.Contains(names, self) {
		s.fail("peers", "must include this node (node.name %q)", self)
	}

	hb, lease := e.HeartbeatTimeout.Duration, e.LeaderLeaseTimeout.Duration
	checkDurationRange(s, "heartbeatTimeout", hb, 100*time.Millisecond, 10*time.Second)

	if lease < 10*time.Millisecond || lease > hb/2 {
		s.fail("leaderLeaseTimeout", "must be between 10ms and half of heartbeatTimeout (%s), got %s: a longer lease could let an isolated leader keep the VIP while the majority elects another", hb/2, lease)
	}
}

func (a *Announce) validate(s scope) {
	checkRange(s, "count", a.Count, 1, 50)
	checkDurationRange(s, "interval", a.Interval.Duration, 10*time.Millisecond, 10*time.Second)

	if r := a.Refresh.Duration; r != 0 {
		checkDurationRange(s, "refresh", r, time.Second, time.Hour)
	}
}

// checkUniqueField reports list[i].field values that repeat an earlier entry's; empty ones are left to "required".
func checkUniqueField(s scope, list, field string, values []string) {
	first := map[string]int{}

	for i, v := range values {
		if v == "" {
			continue
		}

		if j, dup := first[v]; dup {
			s.at(list).index(i).fail(field, "duplicate of %s[%d].%s", list, j, field)

			continue
		}

		first[v] = i
	}
}

func (i *VIPIPVS) validate(s scope, mode VIPMode) {
	if mode != VIPModeL2 {
		s.fail("", "IPVS balancing is for mode l2; in mode bgp the routers spread connections already")
	}

	checkRange(s, "port", i.Port, 1, 65535)
	checkRange(s, "backendPort", i.BackendPort, 1, 65535)

	switch i.Scheduler {
	case "mh", "rr", "wrr", "sh", "lc":
	case "wlc":
		s.fail("scheduler", "wlc is not in Talos kernels; use mh (default), rr, wrr, sh or lc")
	default:
		s.fail("scheduler", "unknown scheduler %q (mh, rr, wrr, sh or lc)", i.Scheduler)
	}
}
