// Package vipcheck observes a control-plane VIP in the netns lab the way
// clients and operators do: which node holds it (lbctl), who answers TCP on
// it, whether the node carries it, and whether two MACs ever answer ARP for
// it at once. The netns tests and `make bench-vip` share it.
package vipcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/arp"

	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
	"github.com/talos-lb/talos-lb/pkg/netutil"
)

// Lab VIPs.
var (
	VIP4 = netip.MustParseAddr("10.77.0.100")
	VIP6 = netip.MustParseAddr("fd77::100")
)

// Config is the agent config every control-plane node of the lab gets: a
// stand-in API server health check and the VIPs, with every node as a peer.
func Config(l *lab.Lab) string {
	var peers strings.Builder
	for _, h := range l.Nodes {
		fmt.Fprintf(&peers, "      - {name: %s, address: \"%s:50071\"}\n", h.Name, h.IPv4)
	}

	return fmt.Sprintf(`healthChecks:
  - name: apiserver
    kind: https
    address: 127.0.0.1:%d
    insecureSkipVerify: true
    interval: 200ms
vip:
  addresses: [%s, "%s"]
  link: eth0
  healthCheck: apiserver
  election:
    peers:
%s`, standin.APIPort, VIP4, VIP6, peers.String())
}

// Holders asks the nodes which of them hold both VIPs.
func Holders(ctx context.Context, c *cluster.Cluster, nodes []*lab.Host) ([]string, error) {
	endpoints := make([]string, 0, len(nodes))
	for _, h := range nodes {
		endpoints = append(endpoints, h.IPv4.String())
	}

	out, err := c.Lbctl(ctx, "-n", strings.Join(endpoints, ","), "get", "vips", "-o", "json")
	if err != nil {
		return nil, err
	}

	held := map[string]int{}
	dec := json.NewDecoder(strings.NewReader(out))

	for dec.More() {
		var d struct {
			Node string `json:"node"`
			Spec struct {
				Holding bool `json:"holding"`
			} `json:"spec"`
		}

		if err := dec.Decode(&d); err != nil {
			return nil, fmt.Errorf("decoding %q: %w", out, err)
		}

		for _, h := range nodes {
			if d.Spec.Holding && strings.HasPrefix(d.Node, h.IPv4.String()+":") {
				held[h.Name]++
			}
		}
	}

	var holders []string

	for name, n := range held {
		if n == 2 {
			holders = append(holders, name)
		}
	}

	return holders, nil
}

// WaitHolder waits until exactly one of the nodes holds the VIPs, and it is not `not`.
func WaitHolder(ctx context.Context, c *cluster.Cluster, nodes []*lab.Host, not string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)

	var (
		last    []string
		lastErr error
	)

	for time.Now().Before(deadline) && ctx.Err() == nil {
		holders, err := Holders(ctx, c, nodes)
		if err == nil && len(holders) == 1 && holders[0] != not {
			return holders[0], nil
		}

		last, lastErr = holders, err

		time.Sleep(50 * time.Millisecond)
	}

	return "", fmt.Errorf("no single VIP holder other than %q within %s (last: %v, %v)", not, timeout, last, lastErr)
}

// FirstAnswer starts a connection from the client to ip's whoami port every
// 10 ms, each left running for up to a second as a retrying client would,
// until a node other than `not` answers; it says which and when. Starting
// attempts on a clock (not one after another) keeps the measurement's
// resolution at 10 ms even while attempts hang on a dead holder.
func FirstAnswer(ctx context.Context, client *lab.Host, ip netip.Addr, not string, timeout time.Duration) (string, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	type answer struct {
		name string
		at   time.Time
		err  error
	}

	answers := make(chan answer, 128)
	inFlight := 0
	tick := time.NewTicker(10 * time.Millisecond)

	defer tick.Stop()

	var lastErr error

	for {
		select {
		case <-ctx.Done():
			return "", time.Time{}, fmt.Errorf("no node other than %q answered on %s within %s: %v", not, ip, timeout, lastErr)
		case a := <-answers:
			inFlight--

			if a.err == nil && a.name != not {
				return a.name, a.at, nil
			}

			lastErr = a.err
		case <-tick.C:
			// Bounded: a black-holed VIP must not pile up sockets.
			if inFlight >= 100 {
				continue
			}

			inFlight++

			go func() {
				name, err := standin.Whoami(ctx, client, ip.AsSlice(), time.Second)
				answers <- answer{name: name, at: time.Now(), err: err}
			}()
		}
	}
}

// HasAddress says whether the node's eth0 carries ip.
func HasAddress(h *lab.Host, ip netip.Addr) (bool, error) {
	return HasAddressOn(h, "eth0", ip)
}

// HasAddressOn says whether the node's link carries ip.
func HasAddressOn(h *lab.Host, link string, ip netip.Addr) (bool, error) {
	var found bool

	err := h.Do(func() error {
		addrs, err := netutil.NetlinkLinks{}.Addresses(link)
		for _, p := range addrs {
			if p.Addr() == ip {
				found = true
			}
		}

		return err
	})

	return found, err
}

// WaitReleased waits until the node no longer carries ip.
func WaitReleased(h *lab.Host, ip netip.Addr, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)

	for {
		has, err := HasAddress(h, ip)
		if err != nil {
			return err
		}

		if !has {
			return nil
		}

		if time.Now().After(deadline) {
			return fmt.Errorf("%s still carries %s after %s", h.Name, ip, timeout)
		}

		time.Sleep(20 * time.Millisecond)
	}
}

// ARPSampler asks for an address's MAC from the client every round and
// records every round in which more than one MAC answered: two holders.
type ARPSampler struct {
	mu     sync.Mutex
	rounds int
	split  []Split
	macs   map[string]int
	done   chan struct{}
	stop   context.CancelFunc
}

// Split is a round in which more than one MAC answered.
type Split struct {
	At   time.Time
	MACs []string
}

func (s Split) String() string {
	return fmt.Sprintf("%s: %v", s.At.Format(time.StampMilli), s.MACs)
}

// StartARPSampler starts sampling; Finish stops it.
func StartARPSampler(ctx context.Context, client *lab.Host, ip netip.Addr) (*ARPSampler, error) {
	var c *arp.Client

	if err := client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}

		c, err = arp.Dial(ifi)

		return err
	}); err != nil {
		return nil, fmt.Errorf("ARP sampler: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	s := &ARPSampler{macs: map[string]int{}, done: make(chan struct{}), stop: cancel}

	go s.run(ctx, c, ip)

	return s, nil
}

func (s *ARPSampler) run(ctx context.Context, c *arp.Client, ip netip.Addr) {
	defer close(s.done)
	defer c.Close() //nolint:errcheck

	for ctx.Err() == nil {
		if err := c.Request(ip); err != nil {
			time.Sleep(10 * time.Millisecond)

			continue
		}

		seen := map[string]bool{}
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)) //nolint:errcheck

		for {
			p, _, err := c.Read()
			if err != nil {
				break
			}

			if p.Operation == arp.OperationReply && p.SenderIP == ip {
				seen[p.SenderHardwareAddr.String()] = true
			}
		}

		s.mu.Lock()
		s.rounds++

		for m := range seen {
			s.macs[m]++
		}

		if len(seen) > 1 {
			s.split = append(s.split, Split{At: time.Now(), MACs: slices.Sorted(maps.Keys(seen))})
		}
		s.mu.Unlock()
	}
}

// Finish stops sampling and returns the rounds sampled, the replies per MAC
// and the rounds in which two MACs answered.
func (s *ARPSampler) Finish() (rounds int, macs map[string]int, split []Split) {
	s.stop()
	<-s.done

	s.mu.Lock()
	defer s.mu.Unlock()

	return s.rounds, s.macs, s.split
}

// WaitAgreed waits until every node names the same election leader: a node
// that just rejoined has caught up, so a graceful hand-off can pick any peer.
func WaitAgreed(ctx context.Context, c *cluster.Cluster, nodes []*lab.Host, timeout time.Duration) error {
	endpoints := make([]string, 0, len(nodes))
	for _, h := range nodes {
		endpoints = append(endpoints, h.IPv4.String())
	}

	deadline := time.Now().Add(timeout)

	var last []string

	for time.Now().Before(deadline) && ctx.Err() == nil {
		out, err := c.Lbctl(ctx, "-n", strings.Join(endpoints, ","), "get", "election", "-o", "json")
		if err == nil {
			last = last[:0]
			dec := json.NewDecoder(strings.NewReader(out))

			for dec.More() {
				var d struct {
					Spec struct {
						Leader string `json:"leader"`
					} `json:"spec"`
				}

				if dec.Decode(&d) == nil {
					last = append(last, d.Spec.Leader)
				}
			}

			if len(last) == len(nodes) && last[0] != "" && slices.Equal(last, slices.Repeat(last[:1], len(last))) {
				return nil
			}
		}

		time.Sleep(50 * time.Millisecond)
	}

	return fmt.Errorf("nodes did not agree on a leader within %s (last: %v)", timeout, last)
}
