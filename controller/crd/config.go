package crd

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// LabelNamespaceName is the label Kubernetes puts on every Namespace with its
// own name; a pool's serviceAllocation.namespaces are matched against it, so
// ipam's NamespaceSelector needs nothing but the namespace's labels.
const LabelNamespaceName = "kubernetes.io/metadata.name"

// Objects are parsed objects of the four kinds.
type Objects struct {
	Pools             []*IPAddressPool
	Peers             []*BGPPeer
	BGPAdvertisements []*BGPAdvertisement
	L2Advertisements  []*L2Advertisement
}

// Problems is what Build and Compile found wrong, per object.
type Problems struct {
	// Errors: the object is invalid and was left out of the Config.
	Errors map[Ref]error
	// Warnings: the object is in the Config but probably not doing what was
	// meant, e.g. it names a pool that does not exist.
	Warnings map[Ref][]string
}

// Condition is the Valid condition to write on the object ref.
func (p Problems) Condition(ref Ref, generation int64) metav1.Condition {
	return ValidCondition(generation, p.Errors[ref], p.Warnings[ref]...)
}

func (p *Problems) fail(ref Ref, field, format string, args ...any) {
	if p.Errors == nil {
		p.Errors = map[Ref]error{}
	}

	fe := &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
	if prev, ok := p.Errors[ref].(*InvalidError); ok {
		prev.Fields = append(prev.Fields, fe)
		return
	}

	p.Errors[ref] = &InvalidError{Ref: ref, Fields: []*FieldError{fe}}
}

func (p *Problems) warn(ref Ref, format string, args ...any) {
	if p.Warnings == nil {
		p.Warnings = map[Ref][]string{}
	}

	p.Warnings[ref] = append(p.Warnings[ref], fmt.Sprintf(format, args...))
}

// Config is the valid configuration, compiled for the controller's questions.
// It is immutable once built: compute one per configuration change and share
// it between goroutines.
type Config struct {
	// Objects are the valid objects, each kind sorted by name (names are
	// unique per kind).
	Objects

	ipamPools []ipam.Pool
	poolIndex map[string]int
	peerIndex map[string]int

	peerNodes  []selectorSet // per peer
	bgpNodes   []selectorSet // per BGP advertisement
	l2Nodes    []selectorSet // per L2 advertisement
	poolBGP    [][]int       // per pool: the BGP advertisements that select it
	poolL2     [][]int       // per pool: the L2 advertisements that select it
	bgpPeers   [][]int       // per BGP advertisement: the peers it names (all when it names none)
	poolBGPAdv [][]*BGPAdvertisement
	poolL2Adv  [][]*L2Advertisement
}

// Build parses objects of any of the four kinds (others are errors too) and
// compiles the valid ones. Problems has an entry for every object that is
// invalid or deserves a warning; the caller writes problems.Condition for
// every object it was given.
func Build(objs []*unstructured.Unstructured) (*Config, Problems) {
	var (
		in       Objects
		problems Problems
	)

	for _, u := range objs {
		if u == nil {
			continue
		}

		o, err := Parse(u)
		if err != nil {
			if problems.Errors == nil {
				problems.Errors = map[Ref]error{}
			}

			problems.Errors[refOfU(u.GetKind(), u)] = err

			continue
		}

		switch o := o.(type) {
		case *IPAddressPool:
			in.Pools = append(in.Pools, o)
		case *BGPPeer:
			in.Peers = append(in.Peers, o)
		case *BGPAdvertisement:
			in.BGPAdvertisements = append(in.BGPAdvertisements, o)
		case *L2Advertisement:
			in.L2Advertisements = append(in.L2Advertisements, o)
		}
	}

	cfg, more := Compile(in)

	for ref, err := range more.Errors {
		if problems.Errors == nil {
			problems.Errors = map[Ref]error{}
		}

		problems.Errors[ref] = err
	}

	problems.Warnings = more.Warnings

	return cfg, problems
}

// Compile checks what no single object can (names unique per kind across
// namespaces, pools disjoint; the oldest object wins a clash and the others
// are reported invalid), then compiles every selector once. The objects must
// come from Parse (defaults filled in); Compile keeps pointers to them.
func Compile(in Objects) (*Config, Problems) {
	var problems Problems

	c := &Config{}
	c.Pools = uniqueNames(in.Pools, &problems)
	c.Peers = uniqueNames(in.Peers, &problems)
	c.BGPAdvertisements = uniqueNames(in.BGPAdvertisements, &problems)
	c.L2Advertisements = uniqueNames(in.L2Advertisements, &problems)

	c.compilePools(&problems)

	c.peerIndex = make(map[string]int, len(c.Peers))
	c.peerNodes = make([]selectorSet, len(c.Peers))

	for i, p := range c.Peers {
		c.peerIndex[p.Name] = i
		c.peerNodes[i] = compileSelectors(p.Spec.NodeSelectors)
	}

	c.poolBGP = make([][]int, len(c.Pools))
	c.poolL2 = make([][]int, len(c.Pools))
	c.bgpNodes = make([]selectorSet, len(c.BGPAdvertisements))
	c.bgpPeers = make([][]int, len(c.BGPAdvertisements))

	for i, a := range c.BGPAdvertisements {
		c.bgpNodes[i] = compileSelectors(a.Spec.NodeSelectors)
		c.selectPools(a.Ref(), i, a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors, c.poolBGP, &problems)
		c.bgpPeers[i] = c.namedPeers(a, &problems)
	}

	c.l2Nodes = make([]selectorSet, len(c.L2Advertisements))

	for i, a := range c.L2Advertisements {
		c.l2Nodes[i] = compileSelectors(a.Spec.NodeSelectors)
		c.selectPools(a.Ref(), i, a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors, c.poolL2, &problems)
	}

	c.poolBGPAdv = make([][]*BGPAdvertisement, len(c.Pools))
	c.poolL2Adv = make([][]*L2Advertisement, len(c.Pools))

	for p := range c.Pools {
		for _, i := range c.poolBGP[p] {
			c.poolBGPAdv[p] = append(c.poolBGPAdv[p], c.BGPAdvertisements[i])
		}

		for _, i := range c.poolL2[p] {
			c.poolL2Adv[p] = append(c.poolL2Adv[p], c.L2Advertisements[i])
		}
	}

	return c, problems
}

// uniqueNames keeps the oldest object of each name (ties: by namespace) and
// reports the others; the result is sorted by name.
func uniqueNames[T Object](objs []T, problems *Problems) []T {
	sorted := slices.Clone(objs)
	slices.SortFunc(sorted, func(a, b T) int {
		ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
		return cmp.Or(ta.Compare(tb.Time), cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})

	seen := make(map[string]T, len(sorted))
	out := sorted[:0]

	for _, o := range sorted {
		if first, dup := seen[o.GetName()]; dup {
			problems.fail(o.Ref(), "metadata.name", "%q is already used by %s, which is older: names are unique per kind across namespaces", o.GetName(), first.Ref())
			continue
		}

		seen[o.GetName()] = o
		out = append(out, o)
	}

	slices.SortFunc(out, func(a, b T) int { return cmp.Compare(a.GetName(), b.GetName()) })

	return out
}

// compilePools drops pools overlapping an older one and builds the ipam pools.
func (c *Config) compilePools(problems *Problems) {
	byAge := slices.Clone(c.Pools)
	slices.SortStableFunc(byAge, func(a, b *IPAddressPool) int {
		return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
	})

	var accepted []ipam.Pool

	keep := map[*IPAddressPool]bool{}

	for _, p := range byAge {
		ip := toIPAMPool(p)
		if err := ipam.New().SetPools(append(slices.Clone(accepted), ip)); err != nil {
			problems.fail(p.Ref(), "spec.addresses", "%s", poolConfigMessage(err))
			continue
		}

		accepted = append(accepted, ip)
		keep[p] = true
	}

	c.Pools = slices.DeleteFunc(c.Pools, func(p *IPAddressPool) bool { return !keep[p] })
	c.poolIndex = make(map[string]int, len(c.Pools))
	c.ipamPools = make([]ipam.Pool, len(c.Pools))

	for i, p := range c.Pools {
		c.poolIndex[p.Name] = i
		c.ipamPools[i] = toIPAMPool(p)
	}
}

// toIPAMPool turns a pool into ipam's form. serviceAllocation.priority maps
// to ipam.Pool.Priority so that, as in MetalLB, pools with a priority come
// first (lowest first), then pinned pools without one, then the rest.
func toIPAMPool(p *IPAddressPool) ipam.Pool {
	out := ipam.Pool{
		Name:          p.Name,
		Addresses:     make([]string, len(p.Spec.Addresses)),
		AutoAssign:    p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
		AvoidBuggyIPs: p.Spec.AvoidBuggyIPs,
		Priority:      math.MaxInt32,
	}

	for i, a := range p.Spec.Addresses {
		out.Addresses[i] = normalizeAddress(a)
	}

	sa := p.Spec.ServiceAllocation
	if sa == nil {
		return out
	}

	pinned := len(sa.Namespaces) > 0 || len(sa.NamespaceSelectors) > 0 || len(sa.ServiceSelectors) > 0

	switch {
	case sa.Priority > 0:
		out.Priority = sa.Priority
	case pinned:
		out.Priority = math.MaxInt32 - 1
	}

	if len(sa.Namespaces) > 0 || len(sa.NamespaceSelectors) > 0 {
		names := make(map[string]bool, len(sa.Namespaces))
		for _, n := range sa.Namespaces {
			names[n] = true
		}

		sels := compileSelectors(sa.NamespaceSelectors)
		out.NamespaceSelector = func(l map[string]string) bool {
			if n, ok := l[LabelNamespaceName]; ok && names[n] {
				return true
			}

			return sels.any(l)
		}
	}

	if len(sa.ServiceSelectors) > 0 {
		sels := compileSelectors(sa.ServiceSelectors)
		out.ServiceSelector = sels.any
	}

	return out
}

// selectPools records advertisement i in index[pool] for every pool it
// selects: by name, by selector on the pool's labels, or all pools when it
// has neither.
func (c *Config) selectPools(ref Ref, i int, names []string, selectors []metav1.LabelSelector, index [][]int, problems *Problems) {
	if len(names) == 0 && len(selectors) == 0 {
		for p := range c.Pools {
			index[p] = append(index[p], i)
		}

		return
	}

	selected := make([]bool, len(c.Pools))

	for _, n := range names {
		if p, ok := c.poolIndex[n]; ok {
			selected[p] = true
		} else {
			problems.warn(ref, "spec.ipAddressPools: no valid IPAddressPool named %q", n)
		}
	}

	if sels := compileSelectors(selectors); len(sels) > 0 {
		for p, pool := range c.Pools {
			if sels.any(pool.Labels) {
				selected[p] = true
			}
		}
	}

	found := false

	for p, ok := range selected {
		if ok {
			index[p] = append(index[p], i)
			found = true
		}
	}

	if !found && len(selectors) > 0 {
		problems.warn(ref, "spec.ipAddressPoolSelectors: select no valid IPAddressPool")
	}
}

// namedPeers are the indexes of the peers a BGP advertisement names, or of
// every peer when it names none.
func (c *Config) namedPeers(a *BGPAdvertisement, problems *Problems) []int {
	if len(a.Spec.Peers) == 0 {
		all := make([]int, len(c.Peers))
		for i := range all {
			all[i] = i
		}

		return all
	}

	var out []int

	for _, n := range a.Spec.Peers {
		if i, ok := c.peerIndex[n]; ok {
			if !slices.Contains(out, i) {
				out = append(out, i)
			}
		} else {
			problems.warn(a.Ref(), "spec.peers: no valid BGPPeer named %q", n)
		}
	}

	slices.Sort(out)

	return out
}

// IPAMPools are the pools for ipam.Allocator.SetPools, sorted by name. Their
// NamespaceSelector expects the Namespace's labels, which Kubernetes gives a
// kubernetes.io/metadata.name label; serviceAllocation.namespaces match it.
func (c *Config) IPAMPools() []ipam.Pool { return slices.Clone(c.ipamPools) }

// Pool is the valid pool of that name, or nil.
func (c *Config) Pool(name string) *IPAddressPool {
	if i, ok := c.poolIndex[name]; ok {
		return c.Pools[i]
	}

	return nil
}

// Peer is the valid BGP peer of that name, or nil.
func (c *Config) Peer(name string) *BGPPeer {
	if i, ok := c.peerIndex[name]; ok {
		return c.Peers[i]
	}

	return nil
}

// BGPAdvertisementsForPool are the BGP advertisements selecting the pool,
// from any node. The slice is shared: do not modify it.
func (c *Config) BGPAdvertisementsForPool(pool string) []*BGPAdvertisement {
	if i, ok := c.poolIndex[pool]; ok {
		return c.poolBGPAdv[i]
	}

	return nil
}

// L2AdvertisementsForPool are the L2 advertisements selecting the pool, from
// any node. The slice is shared: do not modify it.
func (c *Config) L2AdvertisementsForPool(pool string) []*L2Advertisement {
	if i, ok := c.poolIndex[pool]; ok {
		return c.poolL2Adv[i]
	}

	return nil
}

// PeersForNode are the BGP peers whose node selectors match a node's labels.
func (c *Config) PeersForNode(nodeLabels map[string]string) []*BGPPeer {
	var out []*BGPPeer

	for i, p := range c.Peers {
		if c.peerNodes[i].nodeMatch(nodeLabels) {
			out = append(out, p)
		}
	}

	return out
}

// PoolIndex is the position of the named pool in Pools (and IPAMPools);
// the *At lookups of NodeConfig take it. Resolving a service's pool once and
// then asking every node by index saves a map lookup per node and service.
func (c *Config) PoolIndex(name string) (int, bool) {
	i, ok := c.poolIndex[name]
	return i, ok
}

// NodeConfig is the configuration as one node sees it. ForNode computes it
// once (a pass over the objects); its lookups are then a slice index (by
// pool index) or a map access and a slice index (by pool name).
type NodeConfig struct {
	cfg   *Config
	peers []*BGPPeer
	l2    [][]*L2Advertisement // per pool index
	bgp   [][]BGPAnnouncement  // per pool index
}

// BGPAnnouncement is a BGP advertisement that applies to a node, with the
// node's sessions it goes out on.
type BGPAnnouncement struct {
	Advertisement *BGPAdvertisement
	// Peers are the advertisement's peers (all when it names none) that
	// also select the node; never empty.
	Peers []*BGPPeer
}

// ForNode computes what applies to a node with these labels.
func (c *Config) ForNode(nodeLabels map[string]string) *NodeConfig {
	n := &NodeConfig{
		cfg: c,
		l2:  make([][]*L2Advertisement, len(c.Pools)),
		bgp: make([][]BGPAnnouncement, len(c.Pools)),
	}

	peerOn := make([]bool, len(c.Peers))

	for i, p := range c.Peers {
		if c.peerNodes[i].nodeMatch(nodeLabels) {
			peerOn[i] = true
			n.peers = append(n.peers, p)
		}
	}

	// Per BGP advertisement: nil when it does not apply here.
	bgp := make([]*BGPAnnouncement, len(c.BGPAdvertisements))

	for i, a := range c.BGPAdvertisements {
		if !c.bgpNodes[i].nodeMatch(nodeLabels) {
			continue
		}

		var peers []*BGPPeer

		for _, p := range c.bgpPeers[i] {
			if peerOn[p] {
				peers = append(peers, c.Peers[p])
			}
		}

		if len(peers) > 0 {
			bgp[i] = &BGPAnnouncement{Advertisement: a, Peers: peers}
		}
	}

	l2On := make([]bool, len(c.L2Advertisements))
	for i := range c.L2Advertisements {
		l2On[i] = c.l2Nodes[i].nodeMatch(nodeLabels)
	}

	for p := range c.Pools {
		for _, i := range c.poolL2[p] {
			if l2On[i] {
				n.l2[p] = append(n.l2[p], c.L2Advertisements[i])
			}
		}

		for _, i := range c.poolBGP[p] {
			if bgp[i] != nil {
				n.bgp[p] = append(n.bgp[p], *bgp[i])
			}
		}
	}

	return n
}

// Peers are the BGP peers this node opens sessions to.
func (n *NodeConfig) Peers() []*BGPPeer { return n.peers }

// L2Advertisements are the L2 advertisements under which this node may
// announce the pool's IPs; empty: not over L2 (or no such pool). Shared: do
// not modify.
func (n *NodeConfig) L2Advertisements(pool string) []*L2Advertisement {
	if i, ok := n.cfg.poolIndex[pool]; ok {
		return n.l2[i]
	}

	return nil
}

// BGPAnnouncements are the BGP advertisements under which this node
// announces the pool's IPs, each with its sessions; empty: not over BGP (or
// no such pool). Shared: do not modify.
func (n *NodeConfig) BGPAnnouncements(pool string) []BGPAnnouncement {
	if i, ok := n.cfg.poolIndex[pool]; ok {
		return n.bgp[i]
	}

	return nil
}

// L2AdvertisementsAt is L2Advertisements by pool index (see PoolIndex).
func (n *NodeConfig) L2AdvertisementsAt(pool int) []*L2Advertisement { return n.l2[pool] }

// BGPAnnouncementsAt is BGPAnnouncements by pool index (see PoolIndex).
func (n *NodeConfig) BGPAnnouncementsAt(pool int) []BGPAnnouncement { return n.bgp[pool] }

// selectorSet is a list of compiled label selectors.
type selectorSet []labels.Selector

// compileSelectors compiles validated selectors; an invalid one (only
// possible for objects that skipped Parse) selects nothing.
func compileSelectors(sels []metav1.LabelSelector) selectorSet {
	out := make(selectorSet, 0, len(sels))

	for i := range sels {
		s, err := metav1.LabelSelectorAsSelector(&sels[i])
		if err != nil {
			s = labels.Nothing()
		}

		out = append(out, s)
	}

	return out
}

// any says whether one of the selectors matches; none never does.
func (s selectorSet) any(l map[string]string) bool {
	set := labels.Set(l)

	for _, sel := range s {
		if sel.Matches(set) {
			return true
		}
	}

	return false
}

// nodeMatch is the node-selector rule: an empty list selects every node,
// else one of the selectors must match.
func (s selectorSet) nodeMatch(l map[string]string) bool { return len(s) == 0 || s.any(l) }
