// Package l2check drives and observes L2 service IPs in the netns lab: it
// pushes a LoadBalancer Service's desired state to the real agents through
// the controller's own code (controller/desired.Compute, controller/push's
// Pusher and gRPC sender, the controller role's certificate) and then stops
// pushing, as a controller that went away; it puts a kube-proxy stand-in in
// every node (an nftables redirect of the service IP to the whoami port);
// and it reads who owns each IP (lbctl get l2) and how the agents see each
// other (lbctl get members). The netns tests and `make bench-l2` share it.
package l2check

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/arp"

	"github.com/talos-lb/talos-lb/controller/desired"
	"github.com/talos-lb/talos-lb/controller/push"
	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
	"github.com/talos-lb/talos-lb/pkg/pki"
	"github.com/talos-lb/talos-lb/pkg/rank"
)

// Lab service IPs: inside the lab's subnets, on no interface of any node.
var (
	SVC4 = netip.MustParseAddr("10.77.0.200")
	SVC6 = netip.MustParseAddr("fd77::200")
)

// The Service the lab pushes.
const (
	ServiceKey = "default/web"
	Pool       = "lab"
	Rule       = "lab"
)

// Input is the controller's view of the lab: every node ready, one Service
// holding ips from one pool, one L2Advertisement for every node and
// interface. endpointNodes nil means externalTrafficPolicy: Cluster (every
// node eligible); otherwise Local with endpoints on those nodes only.
func Input(c *cluster.Cluster, ips []netip.Addr, endpointNodes []string) *desired.Input {
	in := &desired.Input{L2: []desired.L2Rule{{Name: Rule}}}

	for _, a := range c.Agents {
		in.Nodes = append(in.Nodes, desired.Node{Name: a.Host.Name, Address: cluster.Endpoint(a.Host.IPv4), Labels: map[string]string{}, Ready: true})
	}

	pools := make([]string, len(ips))
	for i := range pools {
		pools[i] = Pool
	}

	in.Services = []desired.Service{{
		Key: ServiceKey, IPs: ips, Pools: pools,
		LocalOnly: endpointNodes != nil, EndpointNodes: endpointNodes,
	}}

	return in
}

// Push computes every node's desired state from in and pushes it as
// lb-controller does, waits until every agent runs it, and stops: the
// controller is down afterwards. It returns what the agents said they
// announce.
func Push(ctx context.Context, c *cluster.Cluster, in *desired.Input, timeout time.Duration) (map[string][]string, error) {
	tlsConfig, err := ControllerTLS(c.Dir)
	if err != nil {
		return nil, err
	}

	fwd, err := newForwarders(c)
	if err != nil {
		return nil, err
	}
	defer fwd.close()

	out := desired.Compute(in)
	targets := map[string]push.Target{}

	for _, a := range c.Agents {
		targets[a.Host.Name] = push.Target{Address: fwd.addr[a.Host.Name], State: out.State(a.Host.Name)}
	}

	sender := push.NewGRPCSender(tlsConfig)
	defer sender.Close() //nolint:errcheck

	p := push.New(sender, nil, push.Options{Identity: "l2check", Timeout: 5 * time.Second, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second})
	p.Set(targets)

	runCtx, stop := context.WithCancel(ctx)

	var wg sync.WaitGroup

	wg.Go(func() { p.Run(runCtx) }) //nolint:errcheck // it only fails when run twice

	defer func() {
		stop()
		wg.Wait()
	}()

	deadline := time.After(timeout)

	for {
		status := p.Status()
		announcing := map[string][]string{}
		synced := 0

		for name, s := range status {
			if s.State == push.StateSynced {
				synced++
			}

			announcing[name] = s.Announcing
		}

		if synced == len(targets) {
			return announcing, nil
		}

		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, fmt.Errorf("agents did not all run the push within %s: %+v", timeout, status)
		case <-p.Changes():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ControllerTLS is the controller role's client TLS for agents, from the
// ca.crt, controller.crt and controller.key that lbctl gen secrets wrote to dir.
func ControllerTLS(dir string) (*tls.Config, error) {
	var pems [3][]byte

	for i, name := range []string{"ca.crt", "controller.crt", "controller.key"} {
		var err error
		if pems[i], err = os.ReadFile(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}

	return pki.ClientTLS(pems[0], pems[1], pems[2], pki.AgentServerName)
}

// forwarders relay the pusher's connections, made in this process's network
// namespace, to the agents inside the lab, dialled from the client's
// namespace: a loopback listener per agent (a socket, no address or link).
type forwarders struct {
	addr  map[string]string
	lns   []net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newForwarders(c *cluster.Cluster) (*forwarders, error) {
	f := &forwarders{addr: map[string]string{}}

	for _, a := range c.Agents {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.close()

			return nil, err
		}

		f.lns = append(f.lns, ln)
		f.addr[a.Host.Name] = ln.Addr().String()
		target := cluster.Endpoint(a.Host.IPv4)

		f.wg.Go(func() { f.serve(ln, c.Lab.Client, target) })
	}

	return f, nil
}

func (f *forwarders) serve(ln net.Listener, from *lab.Host, target string) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}

		f.wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			out, err := from.Dial(ctx, "tcp", target)

			cancel()

			if err != nil {
				in.Close() //nolint:errcheck

				return
			}

			f.mu.Lock()
			f.conns = append(f.conns, in, out)
			f.mu.Unlock()

			go func() {
				io.Copy(out, in) //nolint:errcheck
				out.Close()      //nolint:errcheck
			}()

			io.Copy(in, out) //nolint:errcheck
			in.Close()       //nolint:errcheck
		})
	}
}

func (f *forwarders) close() {
	for _, ln := range f.lns {
		ln.Close() //nolint:errcheck
	}

	f.mu.Lock()
	for _, c := range f.conns {
		c.Close() //nolint:errcheck
	}
	f.mu.Unlock()

	f.wg.Wait()
}

// StartStandIns stands in for kube-proxy on every node: the whoami stand-in
// (which answers the node's name on standin.WhoamiPort) and an nftables
// redirect of ips' whoami port to it, as kube-proxy DNATs a service IP to a
// backend. The IPs stay on no interface. It returns the stand-ins by node name.
func StartStandIns(ctx context.Context, l *lab.Lab, ips ...netip.Addr) (map[string]*standin.APIServer, error) {
	standins, err := standin.StartAll(ctx, l.Nodes)
	if err != nil {
		return nil, err
	}

	var rules strings.Builder

	rules.WriteString("table inet talos_lb_standin {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n")

	for _, ip := range ips {
		family := "ip"
		if ip.Is6() {
			family = "ip6"
		}

		fmt.Fprintf(&rules, "    %s daddr %s tcp dport %d redirect\n", family, ip, standin.WhoamiPort)
	}

	rules.WriteString("  }\n}\n")

	for _, h := range l.Nodes {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.NS, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules.String())

		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("nft in %s: %w\n%s", h.Name, err, out)
		}
	}

	return standins, nil
}

// Ownership is one node's L2Ownership of an IP.
type Ownership struct {
	Owner      string   `json:"owner"`
	Owned      bool     `json:"owned"`
	Reason     string   `json:"reason"`
	Interfaces []string `json:"interfaces"`
	Liveness   string   `json:"liveness"`
	Ranking    []string `json:"ranking"`
	Error      string   `json:"error"`
}

type doc struct {
	Node     string `json:"node"`
	Metadata struct {
		ID string `json:"id"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
}

// get runs `lbctl get typ -o json` against nodes and returns the documents by node name.
func get(ctx context.Context, c *cluster.Cluster, nodes []*lab.Host, typ string) (map[string][]doc, error) {
	endpoints := make([]string, 0, len(nodes))
	for _, h := range nodes {
		endpoints = append(endpoints, h.IPv4.String())
	}

	out, err := c.Lbctl(ctx, "-n", strings.Join(endpoints, ","), "get", typ, "-o", "json")
	if err != nil {
		return nil, err
	}

	docs := map[string][]doc{}
	dec := json.NewDecoder(strings.NewReader(out))

	for dec.More() {
		var d doc
		if err := dec.Decode(&d); err != nil {
			return nil, fmt.Errorf("decoding %q: %w", out, err)
		}

		for _, h := range nodes {
			if strings.HasPrefix(d.Node, h.IPv4.String()+":") {
				docs[h.Name] = append(docs[h.Name], d)
			}
		}
	}

	return docs, nil
}

// Ownerships is each node's L2Ownership of ip, by node name.
func Ownerships(ctx context.Context, c *cluster.Cluster, nodes []*lab.Host, ip netip.Addr) (map[string]Ownership, error) {
	docs, err := get(ctx, c, nodes, "l2")
	if err != nil {
		return nil, err
	}

	out := map[string]Ownership{}

	for name, ds := range docs {
		for _, d := range ds {
			if d.Metadata.ID != ip.String() {
				continue
			}

			var o Ownership
			if err := json.Unmarshal(d.Spec, &o); err != nil {
				return nil, err
			}

			out[name] = o
		}
	}

	return out, nil
}

// WaitOwner waits until every node in nodes names the same owner of ip, other
// than not, that owner (one of nodes) says it owns ip and no other node does.
func WaitOwner(ctx context.Context, c *cluster.Cluster, nodes []*lab.Host, ip netip.Addr, not string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)

	var last string

	for time.Now().Before(deadline) && ctx.Err() == nil {
		o, err := Ownerships(ctx, c, nodes, ip)
		if err == nil {
			if owner, ok := agreed(o, nodes, not); ok {
				return owner, nil
			}
		}

		last = fmt.Sprintf("%+v (%v)", o, err)

		time.Sleep(50 * time.Millisecond)
	}

	return "", fmt.Errorf("no single owner of %s other than %q within %s; last: %s", ip, not, timeout, last)
}

func agreed(o map[string]Ownership, nodes []*lab.Host, not string) (string, bool) {
	if len(o) != len(nodes) {
		return "", false
	}

	owner := ""
	owners := 0

	for _, h := range nodes {
		v := o[h.Name]

		if owner == "" {
			owner = v.Owner
		}

		if v.Owner != owner {
			return "", false
		}

		if v.Owned {
			owners++

			if h.Name != owner {
				return "", false
			}
		}
	}

	return owner, owner != "" && owner != not && owners == 1
}

// Members is each node's view of the gossip: node name to member state.
func Members(ctx context.Context, c *cluster.Cluster, nodes []*lab.Host) (map[string]map[string]string, error) {
	docs, err := get(ctx, c, nodes, "members")
	if err != nil {
		return nil, err
	}

	out := map[string]map[string]string{}

	for name, ds := range docs {
		out[name] = map[string]string{}

		for _, d := range ds {
			var m struct {
				State string `json:"state"`
			}
			if err := json.Unmarshal(d.Spec, &m); err != nil {
				return nil, err
			}

			out[name][d.Metadata.ID] = m.State
		}
	}

	return out, nil
}

// WaitGossip waits until every node in nodes sees each of them alive.
func WaitGossip(ctx context.Context, c *cluster.Cluster, nodes []*lab.Host, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)

	var last map[string]map[string]string

	for time.Now().Before(deadline) && ctx.Err() == nil {
		m, err := Members(ctx, c, nodes)
		if err == nil && allAlive(m, nodes) {
			return nil
		}

		last = m

		time.Sleep(100 * time.Millisecond)
	}

	return fmt.Errorf("nodes do not all see each other alive within %s; last: %v", timeout, last)
}

func allAlive(m map[string]map[string]string, nodes []*lab.Host) bool {
	for _, h := range nodes {
		for _, peer := range nodes {
			if m[h.Name][peer.Name] != "alive" {
				return false
			}
		}
	}

	return true
}

// Node returns the lab node called name.
func Node(l *lab.Lab, name string) *lab.Host {
	i := slices.IndexFunc(l.Nodes, func(h *lab.Host) bool { return h.Name == name })
	if i < 0 {
		return nil
	}

	return l.Nodes[i]
}

// Agent returns the agent on the node called name.
func Agent(c *cluster.Cluster, name string) *cluster.Agent {
	i := slices.IndexFunc(c.Agents, func(a *cluster.Agent) bool { return a.Host.Name == name })
	if i < 0 {
		return nil
	}

	return c.Agents[i]
}

// Partition cuts (on) or restores (off) IP traffic between h and every node
// of rest, in both directions, with blackhole routes inside the nodes: the
// gossip between them breaks while every node still reaches the clients and
// answers ARP/NDP on the shared segment.
func Partition(ctx context.Context, h *lab.Host, rest []*lab.Host, on bool) error {
	verb := "add"
	if !on {
		verb = "del"
	}

	route := func(in, to *lab.Host) error {
		for _, ip := range []netip.Addr{to.IPv4, to.IPv6} {
			if !ip.IsValid() {
				continue
			}

			if _, err := in.Run(ctx, "ip", "route", verb, "blackhole", netip.PrefixFrom(ip, ip.BitLen()).String()); err != nil {
				return err
			}
		}

		return nil
	}

	for _, o := range rest {
		if err := route(h, o); err != nil {
			return err
		}

		if err := route(o, h); err != nil {
			return err
		}
	}

	return nil
}

// FirstARPReply asks for ip's MAC from the client every 10 ms until a MAC
// other than not answers; it says which and when.
func FirstARPReply(ctx context.Context, client *lab.Host, ip netip.Addr, not net.HardwareAddr, timeout time.Duration) (net.HardwareAddr, time.Time, error) {
	var c *arp.Client

	if err := client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}

		c, err = arp.Dial(ifi)

		return err
	}); err != nil {
		return nil, time.Time{}, fmt.Errorf("ARP client: %w", err)
	}
	defer c.Close() //nolint:errcheck

	deadline := time.Now().Add(timeout)

	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err := c.Request(ip); err != nil {
			time.Sleep(10 * time.Millisecond)

			continue
		}

		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond)) //nolint:errcheck

		for {
			p, _, err := c.Read()
			if err != nil {
				break
			}

			if p.Operation == arp.OperationReply && p.SenderIP == ip && p.SenderHardwareAddr.String() != not.String() {
				return p.SenderHardwareAddr, time.Now(), nil
			}
		}
	}

	return nil, time.Time{}, fmt.Errorf("no ARP reply for %s from a MAC other than %s within %s", ip, not, timeout)
}

// SameRankV6 is an address of the lab's IPv6 subnet that nodes rank exactly
// like ip4, so that one fault moves both.
func SameRankV6(ip4 netip.Addr, nodes []string) netip.Addr {
	want := rank.Order(ip4.String(), nodes)

	for i := 0x200; ; i++ {
		ip := netip.MustParseAddr(fmt.Sprintf("fd77::%x", i))
		if slices.Equal(rank.Order(ip.String(), nodes), want) {
			return ip
		}
	}
}

// AgentConfig is the config section every lab agent gets: the liveness
// gossip with its defaults; the agents find each other from the pushed nodes.
const AgentConfig = "members: {}\n"

// Workers configures every lab node as a worker running the gossip.
func Workers() cluster.Options {
	return cluster.Options{Node: func(int, *lab.Host) cluster.NodeConfig {
		return cluster.NodeConfig{Role: "worker", Extra: AgentConfig}
	}}
}

// WaitClient waits until the client reaches ip on owner: owner answers ARP
// or NDP for it (its agent is not holding back), the client's neighbour
// entry names owner's MAC, and a TCP connection to ip is answered by owner.
func WaitClient(ctx context.Context, l *lab.Lab, ip netip.Addr, owner string, timeout time.Duration) error {
	h := Node(l, owner)
	deadline := time.Now().Add(timeout)

	var last string

	for time.Now().Before(deadline) && ctx.Err() == nil {
		name, err := standin.Whoami(ctx, l.Client, ip.AsSlice(), time.Second)
		mac, state, nerr := l.Client.NeighMAC(ip)

		if err == nil && name == owner && nerr == nil && mac.String() == h.MAC.String() {
			return nil
		}

		last = fmt.Sprintf("whoami %q (%v), neighbour %v %s (%v)", name, err, mac, state, nerr)

		time.Sleep(50 * time.Millisecond)
	}

	return fmt.Errorf("the client does not reach %s on %s within %s; last: %s", ip, owner, timeout, last)
}
