// Package speaker runs the embedded BGP speaker (GoBGP v4) behind a small
// interface: the controller hands it the whole desired state (identity,
// peers, paths) and it applies only the difference to what runs.
package speaker

import (
	"context"
	"net/netip"
	"time"
)

// Global is the speaker's identity.
type Global struct {
	ASN      uint32
	RouterID netip.Addr
	// ListenPort 0 means no listener.
	ListenPort int32
}

// Peer is one router session.
type Peer struct {
	Name    string
	Address netip.Addr
	Port    uint32
	ASN     uint32
	// LocalASN is the AS this node speaks as on this session; 0: Global.ASN.
	LocalASN     uint32
	LocalAddress netip.Addr
	HoldTime     time.Duration
	Keepalive    time.Duration
	Password     string
	Multihop     uint32
	BFD          *BFD
	// RestartTime > 0 turns graceful restart on.
	RestartTime time.Duration
}

// BFD is a peer's failure detection.
type BFD struct {
	MinTx, MinRx time.Duration
	Multiplier   uint32
}

// Path is one prefix to announce with its attributes.
type Path struct {
	Prefix           netip.Prefix
	Communities      []uint32
	LargeCommunities [][3]uint32
	LocalPref        uint32
	// Peers names the peers (Peer.Name) the path goes to; empty: every peer.
	// A name no peer has is no error: the path goes to the peers named that exist.
	Peers []string
}

// PeerState is a session as the speaker sees it.
type PeerState struct {
	Address          netip.Addr
	State            string
	Since            time.Time
	PrefixesSent     uint64
	PrefixesReceived uint64
	BFDState         string
}

// Result says which peers (by name) and paths failed.
type Result struct {
	PeerErrors map[string]error
	PathErrors map[netip.Prefix]error
}

// Desired is everything the speaker should run.
type Desired struct {
	Global Global
	Peers  []Peer
	Paths  []Path
}

// Speaker is a BGP speaker.
type Speaker interface {
	// Apply makes the speaker run exactly d, changing only what differs. A
	// peer or path that cannot be set up is reported in Result while the
	// others run; the error says the speaker itself could not run.
	Apply(ctx context.Context, d Desired) (Result, error)
	// Peers reports every session.
	Peers(ctx context.Context) ([]PeerState, error)
	// Changes receives a value (without blocking) whenever a session changes state.
	Changes() <-chan struct{}
	// Stop sends Cease to every peer, so routers withdraw at once, and stops.
	Stop(ctx context.Context) error
}
