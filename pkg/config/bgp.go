package config

import (
	"net/netip"
	"time"
)

// BGP configures the embedded BGP speaker: who this node is and which
// routers it announces prefixes to.
type BGP struct {
	// ASN is this node's AS number.
	ASN uint32 `yaml:"asn"`
	// RouterID must be an IPv4 address; default: the first IPv4 of the node,
	// or one derived from the node name on IPv6-only nodes.
	RouterID string `yaml:"routerID"`
	// ListenPort, when set, accepts incoming sessions. Default 0: no
	// listener, so the agent coexists with Talos's own BGP on :179.
	ListenPort int       `yaml:"listenPort"`
	Peers      []BGPPeer `yaml:"peers"`
}

// BGPPeer is one router.
type BGPPeer struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	Port    int    `yaml:"port"`
	ASN     uint32 `yaml:"asn"`
	// LocalAddress is the session's source and so the announced next hop.
	// Default: the address the kernel would use to reach the peer.
	LocalAddress string   `yaml:"localAddress"`
	HoldTime     Duration `yaml:"holdTime"`
	Keepalive    Duration `yaml:"keepalive"`
	// PasswordFile holds the TCP MD5 password (one line).
	PasswordFile string `yaml:"passwordFile"`
	// Multihop is the eBGP multihop TTL; 0: the router is directly connected.
	Multihop        int              `yaml:"multihop"`
	BFD             *BFD             `yaml:"bfd"`
	GracefulRestart *GracefulRestart `yaml:"gracefulRestart"`
}

// BFD turns on fast failure detection for a peer.
type BFD struct {
	MinTx      Duration `yaml:"minTx"`
	MinRx      Duration `yaml:"minRx"`
	Multiplier int      `yaml:"multiplier"`
}

// GracefulRestart asks the router to keep our routes while the agent restarts.
type GracefulRestart struct {
	RestartTime Duration `yaml:"restartTime"`
}

func (b *BGP) defaults(s scope) {
	for i := range b.Peers {
		p := &b.Peers[i]
		ps := s.at("peers").index(i)

		if !ps.has("port") {
			p.Port = 179
		}

		if !ps.has("holdTime") {
			p.HoldTime.Duration = 9 * time.Second
		}

		if !ps.has("keepalive") {
			p.Keepalive.Duration = p.HoldTime.Duration / 3
		}

		if p.BFD != nil {
			bs := ps.at("bfd")
			if !bs.has("minTx") {
				p.BFD.MinTx.Duration = 300 * time.Millisecond
			}

			if !bs.has("minRx") {
				p.BFD.MinRx.Duration = 300 * time.Millisecond
			}

			if !bs.has("multiplier") {
				p.BFD.Multiplier = 3
			}
		}

		if p.GracefulRestart != nil && !ps.at("gracefulRestart").has("restartTime") {
			p.GracefulRestart.RestartTime.Duration = 120 * time.Second
		}
	}
}

// validASN refuses 0, AS_TRANS and the reserved last ASNs of both ranges.
func validASN(asn uint32) bool {
	return asn != 0 && asn != 23456 && asn != 65535 && asn != 4294967295
}

func (b *BGP) validate(s scope) {
	if !validASN(b.ASN) {
		s.fail("asn", "required: a valid AS number (not 0, 23456, 65535 or 4294967295), got %d", b.ASN)
	}

	if b.RouterID != "" {
		if ip, err := netip.ParseAddr(b.RouterID); err != nil || !ip.Is4() {
			s.fail("routerID", "must be an IPv4 address, got %q", b.RouterID)
		}
	}

	if b.ListenPort != 0 {
		checkRange(s, "listenPort", b.ListenPort, 1, 65535)
	}

	if len(b.Peers) == 0 {
		s.fail("peers", "required: at least one router to announce to")
	}

	names := make([]string, 0, len(b.Peers))
	addrs := make([]string, 0, len(b.Peers))

	for i := range b.Peers {
		b.Peers[i].validate(s.at("peers").index(i))
		names = append(names, b.Peers[i].Name)
		addrs = append(addrs, b.Peers[i].Address)
	}

	checkUniqueField(s, "peers", "name", names)
	checkUniqueField(s, "peers", "address", addrs)
}

func (p *BGPPeer) validate(s scope) {
	if p.Name == "" {
		s.fail("name", "required")
	} else if !checkName.MatchString(p.Name) {
		s.fail("name", "must be 1-63 characters of a-z, 0-9 and '-', got %q", p.Name)
	}

	ip, err := netip.ParseAddr(p.Address)
	if err != nil || ip.Zone() != "" {
		s.fail("address", "required: the router's IP address, got %q", p.Address)
	}

	if p.LocalAddress != "" {
		local, err := netip.ParseAddr(p.LocalAddress)
		if err != nil {
			s.fail("localAddress", "not an IP address: %q", p.LocalAddress)
		} else if ip.IsValid() && local.Is4() != ip.Is4() {
			s.fail("localAddress", "must be of the same family as address %s, got %s", ip, local)
		}
	}

	checkRange(s, "port", p.Port, 1, 65535)

	if !validASN(p.ASN) {
		s.fail("asn", "required: a valid AS number, got %d", p.ASN)
	}

	// RFC 4271: a hold time is 0 (no keepalives) or at least 3 s.
	if h := p.HoldTime.Duration; h < 3*time.Second || h > 65535*time.Second {
		checkDurationRange(s, "holdTime", h, 3*time.Second, 65535*time.Second)
	} else if k := p.Keepalive.Duration; k < time.Second || k > h/3 {
		s.fail("keepalive", "must be between 1s and a third of holdTime (%s), got %s", p.HoldTime.Duration/3, k)
	}

	if p.PasswordFile != "" {
		checkAbsPath(s, "passwordFile", p.PasswordFile)
	}

	if p.Multihop != 0 {
		checkRange(s, "multihop", p.Multihop, 1, 255)
	}

	if p.BFD != nil {
		bs := s.at("bfd")
		checkDurationRange(bs, "minTx", p.BFD.MinTx.Duration, 10*time.Millisecond, 10*time.Second)
		checkDurationRange(bs, "minRx", p.BFD.MinRx.Duration, 10*time.Millisecond, 10*time.Second)
		checkRange(bs, "multiplier", p.BFD.Multiplier, 1, 255)
	}

	if p.GracefulRestart != nil {
		checkDurationRange(s.at("gracefulRestart"), "restartTime", p.GracefulRestart.RestartTime.Duration, time.Second, 4095*time.Second)
	}
}
