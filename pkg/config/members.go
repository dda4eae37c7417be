package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Members configures the liveness gossip among agents (hashicorp/memberlist):
// how agents learn, from each other and within about a second, which of them
// are alive, so L2 service IPs fail over without the controller. Absent, no
// gossip runs and the agent publishes no Member resources.
type Members struct {
	// Listen is the gossip address, UDP and TCP on the same port. Default
	// [::]:7947: one port above memberlist's usual 7946, which MetalLB
	// speakers (host network, like this agent) already use.
	Listen string `yaml:"listen"`
	// Advertise is the address other agents reach this one on, IP or IP:port
	// (port default: listen's). Default: listen's host when it is not a
	// wildcard, else the address the controller pushed for this node, else
	// the source address of the default route.
	Advertise string `yaml:"advertise"`
	// Join lists agents to contact besides the nodes the controller pushes,
	// IP or IP:port (port default: listen's).
	Join []string `yaml:"join"`
	// SecretKeyFile holds gossip encryption keys (AES-GCM), base64, one per
	// line: the first encrypts, every one decrypts. Unset: no encryption.
	SecretKeyFile string `yaml:"secretKeyFile"`
	// Profile is the failure-detection tuning: lan (default, about 1 s) or
	// wan (memberlist's WAN defaults, tens of seconds).
	Profile MembersProfile `yaml:"profile"`
}

// MembersProfile names a failure-detection tuning.
type MembersProfile string

// Gossip profiles.
const (
	MembersProfileLAN MembersProfile = "lan"
	MembersProfileWAN MembersProfile = "wan"
)

// DefaultMembersPort is the gossip port when listen is not set.
const DefaultMembersPort = 7947

func (m *Members) defaults(s scope) {
	if !s.has("listen") {
		m.Listen = "[::]:" + strconv.Itoa(DefaultMembersPort)
	}

	if !s.has("profile") {
		m.Profile = MembersProfileLAN
	}
}

func (m *Members) validate(s scope) {
	checkListen(s, "listen", m.Listen)

	port := DefaultMembersPort
	if l, err := netip.ParseAddrPort(m.Listen); err == nil {
		port = int(l.Port())
	}

	if m.Advertise != "" {
		if ap, err := ParseIPPort(m.Advertise, port); err != nil {
			s.fail("advertise", "%s", err)
		} else if a := ap.Addr(); a.IsUnspecified() || a.IsMulticast() {
			s.fail("advertise", "must be a unicast address other agents reach this one on, got %q", m.Advertise)
		}
	}

	for i, j := range m.Join {
		if _, err := ParseIPPort(j, port); err != nil {
			s.at("join").index(i).fail("", "%s", err)
		}
	}

	checkUnique(s, "join", m.Join)

	if m.SecretKeyFile != "" {
		checkAbsPath(s, "secretKeyFile", m.SecretKeyFile)
	}

	switch m.Profile {
	case MembersProfileLAN, MembersProfileWAN:
	default:
		s.fail("profile", "unknown profile %q (lan or wan)", m.Profile)
	}
}

// ListenAddrPort is Listen parsed; call it on a validated config only.
func (m *Members) ListenAddrPort() netip.AddrPort {
	ap, _ := netip.ParseAddrPort(m.Listen)

	return ap
}

// AdvertiseAddrPort is Advertise with listen's port when it has none; the
// zero value when Advertise is unset. Call it on a validated config only.
func (m *Members) AdvertiseAddrPort() netip.AddrPort {
	if m.Advertise == "" {
		return netip.AddrPort{}
	}

	ap, _ := ParseIPPort(m.Advertise, int(m.ListenAddrPort().Port()))

	return ap
}

// JoinAddrs are the join entries as host:port, with listen's port where an
// entry has none. Call it on a validated config only.
func (m *Members) JoinAddrs() []string {
	out := make([]string, 0, len(m.Join))

	for _, j := range m.Join {
		if ap, err := ParseIPPort(j, int(m.ListenAddrPort().Port())); err == nil {
			out = append(out, ap.String())
		}
	}

	return out
}

// ParseIPPort reads "IP" or "IP:port" ("[IPv6]:port" with a port); a
// missing port is defaultPort. Hostnames are refused: what a node gossips
// with must not depend on DNS.
func ParseIPPort(s string, defaultPort int) (netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		if ip.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("must be an IP address without zone, got %q", s)
		}

		return netip.AddrPortFrom(ip.Unmap(), uint16(defaultPort)), nil //nolint:gosec // a validated port
	}

	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want IP or IP:port, got %q", s)
	}

	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" || strings.ContainsAny(host, " \t") {
		return netip.AddrPort{}, fmt.Errorf("host must be an IP address, got %q", host)
	}

	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return netip.AddrPort{}, fmt.Errorf("port must be a number from 1 to 65535, got %q", port)
	}

	return netip.AddrPortFrom(ip.Unmap(), uint16(n)), nil
}
