// Package desired computes, from what the controller knows of the cluster,
// the state every node's agent should run: which service IPs exist, which
// nodes may announce each of them over L2 or BGP, with which BGP attributes
// and to which peers.
//
// It is a pure function of its Input, so it is tested without Kubernetes and
// benchmarked at a thousand nodes. The output is split into a part shared by
// all nodes and a small per-node part: eligibility travels as named node sets
// rather than per-node flags, so the shared part is built (and later encoded)
// once per change instead of once per node.
package desired

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/rank"
)

// ExcludeLabel is the label that keeps a node out of external load balancing.
// Talos puts it on every control-plane node.
const ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

// Reasons a node does not announce an IP, shown on the agents and in lbctl.
const (
	ReasonNotReady        = "node not ready"
	ReasonExcluded        = "excluded by label " + ExcludeLabel
	ReasonNoLocalEndpoint = "no local endpoints"
	ReasonNotSelected     = "not selected by advertisement"
)

// RankingShown is how many nodes of an IP's L2 ranking status shows.
const RankingShown = 3

// Labels selects by labels; nil selects everything.
type Labels func(labels map[string]string) bool

// Names selects pools by name and labels; nil selects everything.
type Names func(name string, labels map[string]string) bool

// Node is what the computation needs of a Kubernetes Node.
type Node struct {
	Name    string
	Address string
	Labels  map[string]string
	Ready   bool
}

// Service is a LoadBalancer Service holding IPs.
type Service struct {
	// Key is namespace/name.
	Key string
	IPs []netip.Addr
	// Pools[i] names the pool of IPs[i] ("" when outside every pool).
	Pools []string
	// LocalOnly is externalTrafficPolicy: Local.
	LocalOnly bool
	// EndpointNodes are the nodes with a ready endpoint of the service.
	EndpointNodes []string
}

// L2Rule is an L2Advertisement.
type L2Rule struct {
	Name       string
	Pools      Names
	Nodes      Labels
	Interfaces []string
}

// BGPRule is a BGPAdvertisement; Spec.Name must be set.
type BGPRule struct {
	Pools Names
	Nodes Labels
	Spec  *resourcepb.BgpAdvertisementRule
}

// Peer is a BGPPeer; Spec.Peer.Name must be set.
type Peer struct {
	Nodes Labels
	Spec  *resourcepb.PushedBgpPeer
}

// Input is everything the computation reads.
type Input struct {
	Nodes    []Node
	Services []Service
	// PoolLabels are the labels of each pool, for advertisements' pool selectors.
	PoolLabels   map[string]map[string]string
	L2           []L2Rule
	BGP          []BGPRule
	Peers        []Peer
	APIEndpoints []string
	// IgnoreExcludeLabel makes nodes carrying ExcludeLabel eligible.
	IgnoreExcludeLabel bool
}

// NodeState is one node's share of the output.
type NodeState struct {
	Address string
	Peers   []*resourcepb.PushedBgpPeer
}

// ServiceView is how one Service is announced, for status and lbctl.
type ServiceView struct {
	Protocols []string
	// Ranking is the start of the L2 order of eligible nodes for the first
	// IP, best first: the owner and its next RankingShown-1 successors.
	Ranking []string
	// BGPNodes counts the nodes announcing the first IP over BGP.
	BGPNodes int
	// Unannounced says why no node announces the Service, when none does.
	Unannounced string
}

// Output is the computed desired state.
type Output struct {
	// Shared holds service_ips, node_sets, bgp_advertisements, api_endpoints,
	// nodes and ineligible, the same for every node.
	Shared   *resourcepb.NodeDesiredState
	Nodes    map[string]NodeState
	Services map[string]ServiceView
	// Eligible counts the nodes that may announce at all.
	Eligible int
	Warnings []string
}

// State returns node's full desired state (generation left 0). It shares
// Shared's slices: callers must not change them.
func (o *Output) State(node string) *resourcepb.NodeDesiredState {
	ns := o.Nodes[node]

	return &resourcepb.NodeDesiredState{
		Node:              node,
		ServiceIps:        o.Shared.ServiceIps,
		BgpPeers:          ns.Peers,
		ApiEndpoints:      o.Shared.ApiEndpoints,
		NodeSets:          o.Shared.NodeSets,
		BgpAdvertisements: o.Shared.BgpAdvertisements,
		Nodes:             o.Shared.Nodes,
		Ineligible:        o.Shared.Ineligible,
	}
}

type computation struct {
	in       *Input
	base     []*Node // eligible before advertisement and endpoint filters
	reasons  map[string]string
	sets     map[string]*resourcepb.NodeSet
	selected map[string][]string        // node selector results per rule name, computed once
	members  map[string]map[string]bool // the same as sets, for Local services' endpoint filter
	out      *Output
}

// Compute computes the desired state. It does not change in.
func Compute(in *Input) *Output {
	c := &computation{
		in:       in,
		reasons:  map[string]string{},
		sets:     map[string]*resourcepb.NodeSet{},
		selected: map[string][]string{},
		members:  map[string]map[string]bool{},
		out: &Output{
			Shared:   &resourcepb.NodeDesiredState{ApiEndpoints: slices.Sorted(slices.Values(in.APIEndpoints))},
			Nodes:    make(map[string]NodeState, len(in.Nodes)),
			Services: make(map[string]ServiceView, len(in.Services)),
		},
	}

	c.eligibility()
	c.peers()

	for _, r := range in.BGP {
		c.out.Shared.BgpAdvertisements = append(c.out.Shared.BgpAdvertisements, r.Spec)
	}

	services := slices.Clone(in.Services)
	slices.SortFunc(services, func(a, b Service) int { return strings.Compare(a.Key, b.Key) })

	byIP := map[netip.Addr]*resourcepb.ServiceIPSpec{}
	for i := range services {
		c.service(&services[i], byIP)
	}

	for _, ip := range slices.SortedFunc(maps.Keys(byIP), netip.Addr.Compare) {
		c.out.Shared.ServiceIps = append(c.out.Shared.ServiceIps, byIP[ip])
	}

	for _, name := range slices.Sorted(maps.Keys(c.sets)) {
		c.out.Shared.NodeSets = append(c.out.Shared.NodeSets, c.sets[name])
	}

	return c.out
}

func (c *computation) eligibility() {
	excluded := 0

	for i := range c.in.Nodes {
		n := &c.in.Nodes[i]
		c.out.Nodes[n.Name] = NodeState{Address: n.Address}

		if host, _, err := net.SplitHostPort(n.Address); err == nil {
			c.out.Shared.Nodes = append(c.out.Shared.Nodes, &resourcepb.NodeAddress{Name: n.Name, Address: host})
		}

		_, hasLabel := n.Labels[ExcludeLabel]

		switch {
		case !n.Ready:
			c.reasons[n.Name] = ReasonNotReady
		case hasLabel && !c.in.IgnoreExcludeLabel:
			c.reasons[n.Name] = ReasonExcluded
			excluded++
		default:
			c.base = append(c.base, n)
		}
	}

	slices.SortFunc(c.base, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })

	for _, n := range slices.Sorted(maps.Keys(c.reasons)) {
		c.out.Shared.Ineligible = append(c.out.Shared.Ineligible, &resourcepb.NodeReason{Node: n, Reason: c.reasons[n]})
	}
	slices.SortFunc(c.out.Shared.Nodes, func(a, b *resourcepb.NodeAddress) int { return strings.Compare(a.Name, b.Name) })
	c.out.Eligible = len(c.base)

	if len(c.base) == 0 && excluded > 0 {
		c.out.Warnings = append(c.out.Warnings, fmt.Sprintf(
			"no node may announce service IPs: all %d ready nodes carry %s (Talos sets it on control-plane nodes); "+
				"remove the label from the nodes that should announce, or start lb-controller with --ignore-exclude-label",
			excluded, ExcludeLabel))
	}
}

func (c *computation) peers() {
	for i := range c.in.Nodes {
		n := &c.in.Nodes[i]
		ns := c.out.Nodes[n.Name]

		for _, p := range c.in.Peers {
			if p.Nodes == nil || p.Nodes(n.Labels) {
				ns.Peers = append(ns.Peers, p.Spec)
			}
		}

		c.out.Nodes[n.Name] = ns
	}
}

// selectedBy returns the eligible nodes a rule's node selector picks, once per rule.
func (c *computation) selectedBy(rule string, sel Labels) []string {
	if nodes, ok := c.selected[rule]; ok {
		return nodes
	}

	nodes := make([]string, 0, len(c.base))
	for _, n := range c.base {
		if sel == nil || sel(n.Labels) {
			nodes = append(nodes, n.Name)
		}
	}

	c.selected[rule] = nodes

	return nodes
}

// nodeSet names and records the set of nodes announcing under a rule (or
// several rules joined by "+"), narrowed to local endpoints when s is
// LocalOnly; services with cluster-wide policy share one set per rule.
//
// A Local set lists only the few endpoint nodes, and its default reason is
// "no local endpoints": listing the other nodes one by one made a thousand-node
// cluster's state a thousand times larger.
func (c *computation) nodeSet(rule string, nodes []string, s *Service) (string, []string) {
	name := rule
	if s.LocalOnly {
		name = rule + "/" + s.Key
	}

	if set, ok := c.sets[name]; ok {
		return name, set.Nodes
	}

	set := &resourcepb.NodeSet{Name: name, Nodes: nodes, DefaultReason: ReasonNotSelected}

	if s.LocalOnly {
		in := c.membersOf(rule, nodes)
		local := make([]string, 0, len(s.EndpointNodes))

		for _, n := range s.EndpointNodes {
			if in[n] {
				local = append(local, n)
			}
		}

		slices.Sort(local)
		set.Nodes = slices.Compact(local)
		set.DefaultReason = ReasonNoLocalEndpoint

		if unselected := c.unselected(rule); len(unselected) > 0 {
			set.Excluded = make(map[string]string, len(unselected))
			for _, n := range unselected {
				set.Excluded[n] = ReasonNotSelected
			}
		}
	}

	c.sets[name] = set

	return name, set.Nodes
}

// membersOf is a rule's selection as a set, built once per rule.
func (c *computation) membersOf(rule string, nodes []string) map[string]bool {
	if m, ok := c.members[rule]; ok {
		return m
	}

	m := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		m[n] = true
	}

	c.members[rule] = m

	return m
}

// unselected returns the eligible nodes a rule does not select, once per rule.
func (c *computation) unselected(rule string) []string {
	key := "!" + rule
	if nodes, ok := c.selected[key]; ok {
		return nodes
	}

	in := c.membersOf(rule, c.selected[rule])
	out := []string{}

	for _, n := range c.base {
		if !in[n.Name] {
			out = append(out, n.Name)
		}
	}

	c.selected[key] = out

	return out
}

func (c *computation) service(s *Service, byIP map[netip.Addr]*resourcepb.ServiceIPSpec) {
	view := ServiceView{}

	for i, ip := range s.IPs {
		pool := ""
		if i < len(s.Pools) {
			pool = s.Pools[i]
		}

		spec := byIP[ip]
		if spec != nil {
			// A shared IP: the first Service (by key) decides how it is announced.
			spec.Services = append(spec.Services, s.Key)
			continue
		}

		spec = &resourcepb.ServiceIPSpec{Address: ip.String(), Services: []string{s.Key}}
		byIP[ip] = spec

		nodes := c.l2(spec, pool, s)
		if i == 0 && spec.L2 != nil {
			view.Protocols = append(view.Protocols, "l2")
			view.Ranking = rank.Top(spec.Address, nodes, RankingShown)
		}

		bgpNodes := c.bgp(spec, pool, s)
		if i == 0 && len(spec.Bgp) > 0 {
			view.Protocols = append(view.Protocols, "bgp")
			view.BGPNodes = bgpNodes
		}
	}

	switch {
	case len(s.IPs) == 0:
	case len(view.Protocols) == 0:
		view.Unannounced = fmt.Sprintf("no L2Advertisement or BGPAdvertisement selects pool %q", firstPool(s))
	case len(view.Ranking) == 0 && view.BGPNodes == 0:
		view.Unannounced = "no eligible node"
		if s.LocalOnly {
			view.Unannounced = "no eligible node with a ready local endpoint"
		}
	}

	c.out.Services[s.Key] = view
}

func firstPool(s *Service) string {
	if len(s.Pools) == 0 {
		return ""
	}

	return s.Pools[0]
}

// l2 sets spec's L2 announcement from every L2 rule selecting pool: their
// node selections and interfaces are joined, as MetalLB joins
// L2Advertisements. It returns the eligible nodes.
func (c *computation) l2(spec *resourcepb.ServiceIPSpec, pool string, s *Service) []string {
	var (
		names      []string
		rules      []*L2Rule
		interfaces []string
		anyIface   bool
	)

	for i := range c.in.L2 {
		r := &c.in.L2[i]
		if !c.poolSelected(r.Pools, pool) {
			continue
		}

		names = append(names, r.Name)
		rules = append(rules, r)

		if len(r.Interfaces) == 0 {
			anyIface = true
		}

		interfaces = append(interfaces, r.Interfaces...)
	}

	if len(names) == 0 {
		return nil
	}

	// The joined selection is built once per combination of rules, not per IP.
	rule := "l2/" + strings.Join(names, "+")

	nodes, ok := c.selected[rule]
	if !ok {
		for _, r := range rules {
			nodes = append(nodes, c.selectedBy("l2/"+r.Name, r.Nodes)...)
		}

		slices.Sort(nodes)
		nodes = slices.Compact(nodes)
		c.selected[rule] = nodes
	}

	name, eligible := c.nodeSet(rule, nodes, s)
	spec.L2 = &resourcepb.L2Announcement{NodeSet: name}

	if !anyIface {
		slices.Sort(interfaces)
		spec.L2.Interfaces = slices.Compact(interfaces)
	}

	return eligible
}

// bgp adds one announcement per BGP rule selecting pool and returns how many
// nodes announce under the first.
func (c *computation) bgp(spec *resourcepb.ServiceIPSpec, pool string, s *Service) int {
	first := -1

	for _, r := range c.in.BGP {
		if !c.poolSelected(r.Pools, pool) {
			continue
		}

		rule := "bgp/" + r.Spec.Name
		name, nodes := c.nodeSet(rule, c.selectedBy(rule, r.Nodes), s)
		spec.Bgp = append(spec.Bgp, &resourcepb.BgpAnnouncement{Advertisement: r.Spec.Name, NodeSet: name})

		if first < 0 {
			first = len(nodes)
		}
	}

	return max(first, 0)
}

func (c *computation) poolSelected(sel Names, pool string) bool {
	if pool == "" {
		// An IP outside every pool (kept from Service status) is announced by
		// no rule: nobody configured how.
		return false
	}

	return sel == nil || sel(pool, c.in.PoolLabels[pool])
}
