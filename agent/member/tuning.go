package member

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// Profiles of failure detection.
const (
	ProfileLAN = "lan"
	ProfileWAN = "wan"
)

// Label is put on every gossip packet and stream. Members with another label
// (or none, such as MetalLB speakers on the same port by mistake) are ignored
// rather than merged into one cluster.
const Label = "talos-lb"

// How memberlist finds a dead member (SWIM with Lifeguard), and what each
// setting costs:
//
//  1. Every ProbeInterval each member probes the next member of its shuffled
//     list: a UDP ping, ProbeTimeout for the ack, then IndirectChecks other
//     members ping it for us until the end of the interval (and a TCP ping).
//     A dead member is first probed at most a few intervals after it died,
//     usually within one: n-1 members each probe it once per round.
//  2. No ack: the prober marks it suspect and gossips that. The suspicion
//     lasts SuspicionMult × ProbeInterval (× log10 n above 10 members), up to
//     SuspicionMaxTimeoutMult times that when fewer than SuspicionMult-2
//     other members confirm the suspicion. A member that is alive refutes it.
//  3. Then dead, gossiped to GossipNodes random members every GossipInterval.
//
// memberlist's LAN defaults (1 s probes, 500 ms timeout, suspicion ×4, up to
// ×6) take ~5 s to ~24 s, which is MetalLB's L2 failover. Issue 8 wants a
// dead owner replaced within 2 s, so about 1 s of detection:
//
//   - ProbeInterval 200 ms, ProbeTimeout 100 ms: LAN round trips are well
//     under a millisecond, so 100 ms only has to cover a busy or paused
//     process. Each member sends 5 pings a second (~2 KB/s of UDP), whatever
//     the cluster size. Lifeguard's awareness (AwarenessMaxMultiplier 8,
//     kept) stretches both on a member that itself misses acks, so an
//     overloaded node slows its own accusations instead of flapping others.
//   - SuspicionMult 3: 600 ms of suspicion up to 10 members, enough for a
//     live member to hear of it and refute (a gossip round is 50 ms) even
//     after a short stall; SuspicionMaxTimeoutMult 2 caps an unconfirmed
//     suspicion in clusters above 4 members at 1.2 s instead of 3.6 s.
//   - GossipInterval 50 ms: suspicion, death and refutation spread within a
//     few rounds instead of 200 ms each; a round with nothing queued sends
//     nothing, so quiet clusters pay nothing for it.
//   - TCPTimeout 2 s: joins and push/pulls to an agent that is not there
//     give up sooner than the default 10 s (a frozen process accepts TCP
//     connections and then never answers).
//   - DeadNodeReclaimTime 5 s: a node that crashed and comes back with
//     another address (DHCP) is taken back after 5 s instead of never.
//
// Expected: ~0–200 ms to the first failed probe, 200 ms of probing, 600 ms of
// suspicion and ~50 ms of gossip: ~0.9–1.1 s from death to every member
// seeing it dead. Measured (member_test.go, 3 members on loopback; the netns
// test, 3 agent processes): see docs/members.md.
func tuneLAN(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 2
	c.GossipInterval = 50 * time.Millisecond
	c.TCPTimeout = 2 * time.Second
	c.DeadNodeReclaimTime = 5 * time.Second
}

// baseConfig is memberlist's config for a profile; unknown profiles are LAN.
func baseConfig(profile string) *memberlist.Config {
	if profile == ProfileWAN {
		// Members far apart (100 ms or more of latency, lossy links): memberlist's
		// own WAN tuning, 5 s probes and ~35 s or more to declare a death.
		c := memberlist.DefaultWANConfig()
		c.DeadNodeReclaimTime = 30 * time.Second

		return c
	}

	c := memberlist.DefaultLANConfig()
	tuneLAN(c)

	return c
}

// suspectFor bounds a suspect mark of the table: memberlist's longest
// suspicion (for up to 1,000 members: × log10 n = 3) and two probe intervals.
// A member still not dead by then was refuted.
func suspectFor(c *memberlist.Config) time.Duration {
	return time.Duration(c.SuspicionMult*c.SuspicionMaxTimeoutMult*3)*c.ProbeInterval + 2*c.ProbeInterval
}
