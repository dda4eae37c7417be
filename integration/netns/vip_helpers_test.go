package netns_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"

	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
	"github.com/talos-lb/talos-lb/pkg/netutil"
)

var (
	vip4 = netip.MustParseAddr("10.77.0.100")
	vip6 = netip.MustParseAddr("fd77::100")
)

type vipLab struct {
	t       *testing.T
	lab     *lab.Lab
	cluster *cluster.Cluster
	apis    map[string]*standin.APIServer
}

// vipExtra is the config every control-plane node gets: a stand-in API
// server health check and the VIP with all three nodes as election peers.
func vipExtra(l *lab.Lab) string {
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
%s`, standin.APIPort, vip4, vip6, peers.String())
}

func startVIPLab(t *testing.T) *vipLab {
	t.Helper()

	l := lab.NewForTest(t, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})
	v := &vipLab{t: t, lab: l, apis: map[string]*standin.APIServer{}}

	for _, h := range l.Nodes {
		s, err := standin.Start(t.Context(), h)
		if err != nil {
			t.Fatal(err)
		}

		v.apis[h.Name] = s
	}

	c, err := cluster.Start(t.Context(), l, cluster.Options{
		Node: func(int, *lab.Host) cluster.NodeConfig {
			return cluster.NodeConfig{Role: "controlplane", Extra: vipExtra(l)}
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	v.cluster = c

	return v
}

func (v *vipLab) node(name string) *lab.Host {
	for _, h := range v.lab.Nodes {
		if h.Name == name {
			return h
		}
	}

	v.t.Fatalf("no node %s", name)

	return nil
}

func (v *vipLab) agent(name string) *cluster.Agent {
	for _, a := range v.cluster.Agents {
		if a.Host.Name == name {
			return a
		}
	}

	v.t.Fatalf("no agent %s", name)

	return nil
}

// statuses asks the given nodes for their VIP statuses: node → address → holding.
func (v *vipLab) statuses(ctx context.Context, nodes []*lab.Host) (map[string]map[string]bool, error) {
	args := []string{"get", "vips", "-o", "json"}

	var endpoints []string
	for _, h := range nodes {
		endpoints = append(endpoints, h.IPv4.String())
	}

	out, err := v.cluster.Lbctl(ctx, append([]string{"-n", strings.Join(endpoints, ",")}, args...)...)
	if err != nil {
		return nil, err
	}

	res := map[string]map[string]bool{}
	dec := json.NewDecoder(strings.NewReader(out))

	for dec.More() {
		var d struct {
			Node string `json:"node"`
			Spec struct {
				Address string `json:"address"`
				Holding bool   `json:"holding"`
			} `json:"spec"`
		}

		if err := dec.Decode(&d); err != nil {
			return nil, fmt.Errorf("decoding %q: %w", out, err)
		}

		for _, h := range nodes {
			if strings.HasPrefix(d.Node, h.IPv4.String()+":") {
				if res[h.Name] == nil {
					res[h.Name] = map[string]bool{}
				}

				res[h.Name][d.Spec.Address] = d.Spec.Holding
			}
		}
	}

	return res, nil
}

// waitHolder waits until exactly one of the nodes holds both VIPs, and not `not`.
func (v *vipLab) waitHolder(nodes []*lab.Host, not string) string {
	v.t.Helper()

	deadline := time.Now().Add(20 * time.Second)

	var last map[string]map[string]bool

	for time.Now().Before(deadline) {
		st, err := v.statuses(v.t.Context(), nodes)
		if err == nil {
			last = st

			var holders []string

			for name, addrs := range st {
				if addrs[vip4.String()] && addrs[vip6.String()] {
					holders = append(holders, name)
				}
			}

			if len(holders) == 1 && holders[0] != not {
				return holders[0]
			}
		}

		time.Sleep(100 * time.Millisecond)
	}

	v.t.Fatalf("no single VIP holder (other than %q) within 20 s; last statuses: %v", not, last)

	return ""
}

// whoamiVia keeps connecting from the client to the VIP until a node other
// than `not` answers.
func (v *vipLab) whoamiVia(ip netip.Addr, not string) string {
	v.t.Helper()

	deadline := time.Now().Add(20 * time.Second)

	var lastErr error

	for time.Now().Before(deadline) {
		name, err := standin.Whoami(v.t.Context(), v.lab.Client, ip.AsSlice(), 300*time.Millisecond)
		if err == nil && name != not {
			return name
		}

		lastErr = err

		time.Sleep(50 * time.Millisecond)
	}

	v.t.Fatalf("no node other than %q answered on %s within 20 s: %v", not, ip, lastErr)

	return ""
}

// hasAddress says whether the node's eth0 carries ip.
func hasAddress(t *testing.T, h *lab.Host, ip netip.Addr) bool {
	t.Helper()

	var found bool

	if err := h.Do(func() error {
		addrs, err := netutil.NetlinkLinks{}.Addresses("eth0")
		for _, p := range addrs {
			if p.Addr() == ip {
				found = true
			}
		}

		return err
	}); err != nil {
		t.Fatal(err)
	}

	return found
}

// arpSampler asks for the VIP's MAC from the client every 20 ms and records
// every round in which more than one MAC answered: two holders at once.
type arpSampler struct {
	mu     sync.Mutex
	rounds int
	split  []string
	macs   map[string]int
	done   chan struct{}
	stop   context.CancelFunc
}

func startARPSampler(t *testing.T, client *lab.Host, ip netip.Addr) *arpSampler {
	t.Helper()

	ctx, cancel := context.WithCancel(t.Context())
	s := &arpSampler{macs: map[string]int{}, done: make(chan struct{}), stop: cancel}

	var c *arp.Client

	if err := client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}

		c, err = arp.Dial(ifi)

		return err
	}); err != nil {
		t.Fatalf("ARP sampler: %v", err)
	}

	go func() {
		defer close(s.done)
		defer c.Close() //nolint:errcheck

		for ctx.Err() == nil {
			if err := c.Request(ip); err != nil {
				continue
			}

			seen := map[string]bool{}
			end := time.Now().Add(20 * time.Millisecond)
			c.SetReadDeadline(end) //nolint:errcheck

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
				s.split = append(s.split, fmt.Sprintf("%s: %v", time.Now().Format(time.StampMilli), seen))
			}
			s.mu.Unlock()
		}
	}()

	return s
}

// finish stops sampling and fails the test if two MACs ever answered in one round.
func (s *arpSampler) finish(t *testing.T) {
	t.Helper()
	s.stop()
	<-s.done

	s.mu.Lock()
	defer s.mu.Unlock()

	t.Logf("ARP sampler: %d rounds, replies per MAC %v", s.rounds, s.macs)

	if len(s.split) > 0 {
		t.Errorf("two MACs answered for the VIP in %d rounds: %v", len(s.split), s.split)
	}
}

// neighMAC is the client's kernel neighbour entry for ip.
func neighMAC(t *testing.T, client *lab.Host, ip netip.Addr) string {
	t.Helper()

	mac, _, err := client.NeighMAC(ip)
	if err != nil {
		return ""
	}

	return mac.String()
}
