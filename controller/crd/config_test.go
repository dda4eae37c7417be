package crd_test

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/talos-lb/talos-lb/controller/crd"
	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// build compiles YAML documents separated by "---" and fails on any problem
// unless allowProblems.
func build(t testing.TB, docs string, allowProblems bool) (*crd.Config, crd.Problems) {
	t.Helper()

	var objs []*unstructured.Unstructured

	for d := range strings.SplitSeq(docs, "\n---\n") {
		if strings.TrimSpace(d) != "" {
			objs = append(objs, obj(t, d))
		}
	}

	cfg, problems := crd.Build(objs)
	if !allowProblems && (len(problems.Errors) > 0 || len(problems.Warnings) > 0) {
		t.Fatalf("problems: %v %v", problems.Errors, problems.Warnings)
	}

	return cfg, problems
}

func names[T interface{ GetName() string }](objs []T) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.GetName()
	}

	return out
}

const poolsAndAdvertisements = `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: gold, namespace: lb, labels: {tier: gold}}
spec: {addresses: [10.0.1.0/24]}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: silver, namespace: lb, labels: {tier: silver}}
spec: {addresses: [10.0.2.0/24]}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: plain, namespace: other}
spec: {addresses: ["fd00::/120"]}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: L2Advertisement
metadata: {name: l2-all, namespace: lb}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: L2Advertisement
metadata: {name: l2-gold-by-name, namespace: lb}
spec: {ipAddressPools: [gold], interfaces: [eth1]}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: L2Advertisement
metadata: {name: l2-silver-by-label, namespace: lb}
spec:
  ipAddressPoolSelectors: [{matchLabels: {tier: silver}}]
  nodeSelectors: [{matchLabels: {l2: "yes"}}]
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: bgp-plain-or-gold, namespace: lb}
spec:
  ipAddressPools: [plain]
  ipAddressPoolSelectors: [{matchExpressions: [{key: tier, operator: In, values: [gold]}]}]
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: bgp-not-gold, namespace: lb}
spec:
  ipAddressPoolSelectors: [{matchExpressions: [{key: tier, operator: NotIn, values: [gold]}]}]
`

func TestPoolsAndAdvertisements(t *testing.T) {
	cfg, _ := build(t, poolsAndAdvertisements, false)

	if got := names(cfg.Pools); !slices.Equal(got, []string{"gold", "plain", "silver"}) {
		t.Errorf("pools %v", got)
	}

	for pool, want := range map[string][]string{
		"gold":   {"l2-all", "l2-gold-by-name"},
		"silver": {"l2-all", "l2-silver-by-label"},
		"plain":  {"l2-all"},
		"nope":   nil,
	} {
		if got := names(cfg.L2AdvertisementsForPool(pool)); !slices.Equal(got, want) && len(got)+len(want) > 0 {
			t.Errorf("L2 for %s: %v, want %v", pool, got, want)
		}
	}

	for pool, want := range map[string][]string{
		"gold":   {"bgp-plain-or-gold"},
		"silver": {"bgp-not-gold"},
		// NotIn matches a pool without the label at all, as in Kubernetes.
		"plain": {"bgp-not-gold", "bgp-plain-or-gold"},
	} {
		if got := names(cfg.BGPAdvertisementsForPool(pool)); !slices.Equal(got, want) {
			t.Errorf("BGP for %s: %v, want %v", pool, got, want)
		}
	}

	// Node selectors of L2 advertisements.
	node := cfg.ForNode(map[string]string{"l2": "yes"})
	if got := names(node.L2Advertisements("silver")); !slices.Equal(got, []string{"l2-all", "l2-silver-by-label"}) {
		t.Errorf("l2 node, silver: %v", got)
	}

	node = cfg.ForNode(map[string]string{"l2": "no"})
	if got := names(node.L2Advertisements("silver")); !slices.Equal(got, []string{"l2-all"}) {
		t.Errorf("other node, silver: %v", got)
	}

	if got := node.L2Advertisements("gold"); len(got) != 2 || got[1].Spec.Interfaces[0] != "eth1" {
		t.Errorf("other node, gold: %v", names(got))
	}

	// No peers at all: nothing goes out over BGP.
	if got := node.BGPAnnouncements("gold"); len(got) != 0 {
		t.Errorf("BGP announcements without peers: %v", got)
	}
}

const peers = `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: pool, namespace: lb}
spec: {addresses: [10.0.0.0/24]}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor-all, namespace: lb}
spec: {myASN: 65000, peerASN: 65100, peerAddress: 10.1.0.1}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor-r1, namespace: lb}
spec:
  myASN: 65000
  peerASN: 65101
  peerAddress: 10.1.1.1
  nodeSelectors: [{matchLabels: {rack: r1}}]
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor-r23, namespace: lb}
spec:
  myASN: 65000
  peerASN: 65102
  peerAddress: 10.1.2.1
  nodeSelectors: [{matchLabels: {rack: r2}}, {matchLabels: {rack: r3}}]
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: everywhere, namespace: lb}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: r1-zone-a, namespace: lb}
spec:
  peers: [tor-r1]
  nodeSelectors: [{matchLabels: {zone: a}}]
  communities: [no-export]
`

func TestNodesPeersAndAdvertisements(t *testing.T) {
	cfg, _ := build(t, peers, false)

	type announcement struct {
		adv   string
		peers []string
	}

	cases := []struct {
		labels map[string]string
		peers  []string
		bgp    []announcement
	}{
		{map[string]string{"rack": "r1", "zone": "a"}, []string{"tor-all", "tor-r1"}, []announcement{
			{"everywhere", []string{"tor-all", "tor-r1"}},
			{"r1-zone-a", []string{"tor-r1"}},
		}},
		{map[string]string{"rack": "r1", "zone": "b"}, []string{"tor-all", "tor-r1"}, []announcement{
			{"everywhere", []string{"tor-all", "tor-r1"}},
		}},
		{map[string]string{"rack": "r3", "zone": "a"}, []string{"tor-all", "tor-r23"}, []announcement{
			{"everywhere", []string{"tor-all", "tor-r23"}},
			// r1-zone-a selects the node, but its only peer is not the node's.
		}},
		{nil, []string{"tor-all"}, []announcement{{"everywhere", []string{"tor-all"}}}},
	}

	for _, c := range cases {
		if got := names(cfg.PeersForNode(c.labels)); !slices.Equal(got, c.peers) {
			t.Errorf("%v: PeersForNode %v, want %v", c.labels, got, c.peers)
		}

		node := cfg.ForNode(c.labels)
		if got := names(node.Peers()); !slices.Equal(got, c.peers) {
			t.Errorf("%v: Peers %v, want %v", c.labels, got, c.peers)
		}

		var got []announcement
		for _, a := range node.BGPAnnouncements("pool") {
			got = append(got, announcement{a.Advertisement.Name, names(a.Peers)})
		}

		if !reflect.DeepEqual(got, c.bgp) {
			t.Errorf("%v: announcements %v, want %v", c.labels, got, c.bgp)
		}

		if i, ok := cfg.PoolIndex("pool"); !ok || !reflect.DeepEqual(node.BGPAnnouncementsAt(i), node.BGPAnnouncements("pool")) {
			t.Errorf("%v: lookups by index and by name differ", c.labels)
		}

		if len(node.BGPAnnouncements("no-such-pool")) != 0 || len(node.L2Advertisements("pool")) != 0 {
			t.Errorf("%v: announcements for the wrong pool or protocol", c.labels)
		}
	}

	if cfg.Peer("tor-r1") == nil || cfg.Peer("tor-r9") != nil || cfg.Pool("pool") == nil || cfg.Pool("x") != nil {
		t.Errorf("Peer/Pool lookups")
	}
}

const allocation = `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: a-default, namespace: lb}
spec: {addresses: [10.0.0.0/30]}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: b-gold, namespace: lb}
spec:
  addresses: [10.0.1.0/30]
  serviceAllocation:
    priority: 5
    serviceSelectors: [{matchLabels: {tier: gold}}]
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: c-team, namespace: lb}
spec:
  addresses: [10.0.2.0/30]
  serviceAllocation:
    namespaces: [team-a]
    namespaceSelectors: [{matchLabels: {env: prod}}]
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: d-first, namespace: lb}
spec:
  addresses: [10.0.3.1, 10.0.3.2]
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation: {priority: 1}
`

func TestIPAMPools(t *testing.T) {
	cfg, _ := build(t, allocation, false)

	pools := cfg.IPAMPools()
	if got := names2(pools); !slices.Equal(got, []string{"a-default", "b-gold", "c-team", "d-first"}) {
		t.Fatalf("pools %v", got)
	}

	d := pools[3]
	if d.AutoAssign || !d.AvoidBuggyIPs || !slices.Equal(d.Addresses, []string{"10.0.3.1/32", "10.0.3.2/32"}) || d.Priority != 1 {
		t.Errorf("d-first: %+v", d)
	}

	// MetalLB's order: a priority first, then pinned pools, then the rest.
	if !(pools[1].Priority < pools[2].Priority && pools[2].Priority < pools[0].Priority) {
		t.Errorf("priorities gold %d, team %d, default %d", pools[1].Priority, pools[2].Priority, pools[0].Priority)
	}

	al := ipam.New()
	if err := al.SetPools(pools); err != nil {
		t.Fatal(err)
	}

	ns := func(name string, labels ...string) map[string]string {
		m := map[string]string{crd.LabelNamespaceName: name}
		for i := 0; i < len(labels); i += 2 {
			m[labels[i]] = labels[i+1]
		}

		return m
	}

	cases := []struct {
		name            string
		labels, nsLabel map[string]string
		pool            string
	}{
		{"plain", nil, ns("x"), "a-default"},
		{"gold", map[string]string{"tier": "gold"}, ns("x"), "b-gold"},
		{"team by name", nil, ns("team-a"), "c-team"},
		{"team by label", nil, ns("y", "env", "prod"), "c-team"},
		{"gold beats team", map[string]string{"tier": "gold"}, ns("team-a"), "b-gold"},
	}

	for _, c := range cases {
		got, err := al.Allocate(ipam.Request{
			Service:         ipam.ServiceKey{Namespace: c.nsLabel[crd.LabelNamespaceName], Name: c.name},
			Families:        []ipam.Family{ipam.IPv4},
			Labels:          c.labels,
			NamespaceLabels: c.nsLabel,
		})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}

		if got.Pools[0] != c.pool {
			t.Errorf("%s: got %v from %s, want %s", c.name, got.IPs, got.Pools[0], c.pool)
		}
	}

	// A single address is a pool of one; autoAssign off needs the request.
	got, err := al.Allocate(ipam.Request{
		Service:  ipam.ServiceKey{Namespace: "x", Name: "pinned"},
		Families: []ipam.Family{ipam.IPv4},
		IPs:      []netip.Addr{netip.MustParseAddr("10.0.3.2")},
	})
	if err != nil || got.Pools[0] != "d-first" {
		t.Errorf("requested 10.0.3.2: %v, %v", got, err)
	}
}

func names2(pools []ipam.Pool) []string {
	out := make([]string, len(pools))
	for i, p := range pools {
		out[i] = p.Name
	}

	return out
}

func TestCrossObjectProblems(t *testing.T) {
	old := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	young := metav1.NewTime(old.Add(time.Hour))

	pool := func(ns, name string, created metav1.Time, addrs ...string) *crd.IPAddressPool {
		return &crd.IPAddressPool{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: created},
			Spec:       crd.IPAddressPoolSpec{Addresses: addrs},
		}
	}

	in := crd.Objects{
		Pools: []*crd.IPAddressPool{
			pool("zz", "same", old, "10.0.0.0/24"),
			pool("aa", "same", young, "10.0.1.0/24"),
			pool("lb", "overlapping", young, "10.0.0.128-10.0.0.130"),
			pool("lb", "fine", young, "10.0.2.0/24"),
		},
		L2Advertisements: []*crd.L2Advertisement{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "lb", Name: "l2"},
			Spec:       crd.L2AdvertisementSpec{IPAddressPools: []string{"fine", "overlapping"}},
		}},
		BGPAdvertisements: []*crd.BGPAdvertisement{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "lb", Name: "bgp"},
			Spec: crd.BGPAdvertisementSpec{
				Peers:                  []string{"ghost"},
				IPAddressPoolSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"no": "match"}}},
			},
		}},
	}

	cfg, problems := crd.Compile(in)

	if got := names(cfg.Pools); !slices.Equal(got, []string{"fine", "same"}) || cfg.Pool("same").Namespace != "zz" {
		t.Errorf("pools %v (same from %s)", got, cfg.Pool("same").Namespace)
	}

	for ref, want := range map[crd.Ref]string{
		{Kind: crd.KindIPAddressPool, Namespace: "aa", Name: "same"}:        `IPAddressPool aa/same: metadata.name: "same" is already used by IPAddressPool zz/same, which is older`,
		{Kind: crd.KindIPAddressPool, Namespace: "lb", Name: "overlapping"}: `IPAddressPool lb/overlapping: spec.addresses: 10.0.0.128-10.0.0.130 of pool "overlapping" overlaps 10.0.0.0-10.0.0.255 of pool "same"`,
	} {
		if err := problems.Errors[ref]; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v\nwant %s", ref, err, want)
		}
	}

	if len(problems.Errors) != 2 {
		t.Errorf("errors: %v", problems.Errors)
	}

	l2 := crd.Ref{Kind: crd.KindL2Advertisement, Namespace: "lb", Name: "l2"}
	bgp := crd.Ref{Kind: crd.KindBGPAdvertisement, Namespace: "lb", Name: "bgp"}

	if w := problems.Warnings[l2]; len(w) != 1 || !strings.Contains(w[0], `spec.ipAddressPools: no valid IPAddressPool named "overlapping"`) {
		t.Errorf("l2 warnings %q", w)
	}

	if w := problems.Warnings[bgp]; len(w) != 2 || !strings.Contains(strings.Join(w, "|"), `spec.peers: no valid BGPPeer named "ghost"`) || !strings.Contains(strings.Join(w, "|"), "spec.ipAddressPoolSelectors: select no valid IPAddressPool") {
		t.Errorf("bgp warnings %q", w)
	}

	c := problems.Condition(l2, 7)
	if c.Status != metav1.ConditionTrue || c.Reason != crd.ReasonValid || c.ObservedGeneration != 7 || !strings.HasPrefix(c.Message, "valid, but: spec.ipAddressPools") {
		t.Errorf("warning condition %+v", c)
	}

	c = problems.Condition(crd.Ref{Kind: crd.KindIPAddressPool, Namespace: "aa", Name: "same"}, 2)
	if c.Status != metav1.ConditionFalse || c.Reason != crd.ReasonInvalid || !strings.HasPrefix(c.Message, `metadata.name: "same" is already used`) {
		t.Errorf("invalid condition %+v", c)
	}

	// The surviving pools still make a valid ipam configuration.
	if err := ipam.New().SetPools(cfg.IPAMPools()); err != nil {
		t.Error(err)
	}
}

// Same creation time: the namespace decides, so every replica agrees.
func TestNameClashTie(t *testing.T) {
	cfg, problems := build(t, `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor, namespace: b}
spec: {myASN: 65000, peerASN: 65001, peerAddress: 10.0.0.2}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor, namespace: a}
spec: {myASN: 65000, peerASN: 65001, peerAddress: 10.0.0.1}
`, true)

	if len(cfg.Peers) != 1 || cfg.Peers[0].Namespace != "a" {
		t.Errorf("peers %v", cfg.Peers)
	}

	if err := problems.Errors[crd.Ref{Kind: crd.KindBGPPeer, Namespace: "b", Name: "tor"}]; err == nil {
		t.Errorf("no error for b/tor: %v", problems.Errors)
	}
}

func TestBuild(t *testing.T) {
	docs := poolsAndAdvertisements + "\n---\n" + peers + `
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: broken, namespace: lb, generation: 3}
spec: {addresses: [10.0.0.0/33]}
---
apiVersion: lb.talos-lb.dev/v1alpha1
kind: Something
metadata: {name: odd, namespace: lb}
`
	// The "pool" pool of the peers' documents overlaps nothing; all good
	// but the two broken objects.
	cfg, problems := build(t, docs, true)

	if len(problems.Errors) != 2 {
		t.Fatalf("errors %v", problems.Errors)
	}

	broken := crd.Ref{Kind: crd.KindIPAddressPool, Namespace: "lb", Name: "broken"}

	c := problems.Condition(broken, 3)
	if c.Type != crd.ConditionValid || c.Status != metav1.ConditionFalse || c.Reason != crd.ReasonInvalid || c.ObservedGeneration != 3 ||
		c.Message != `spec.addresses[0]: "10.0.0.0/33" is not a CIDR, a range a-b or an address` || c.LastTransitionTime.IsZero() {
		t.Errorf("condition %+v", c)
	}

	if problems.Errors[crd.Ref{Kind: "Something", Namespace: "lb", Name: "odd"}] == nil {
		t.Errorf("unknown kind not reported")
	}

	c = problems.Condition(crd.Ref{Kind: crd.KindIPAddressPool, Namespace: "lb", Name: "gold"}, 1)
	if c.Status != metav1.ConditionTrue || c.Message != "" {
		t.Errorf("valid condition %+v", c)
	}

	if len(cfg.Pools) != 4 || len(cfg.Peers) != 3 || len(cfg.BGPAdvertisements) != 4 || len(cfg.L2Advertisements) != 3 {
		t.Errorf("config: %d pools, %d peers, %d BGP and %d L2 advertisements", len(cfg.Pools), len(cfg.Peers), len(cfg.BGPAdvertisements), len(cfg.L2Advertisements))
	}

	// Input order does not matter.
	var objs []*unstructured.Unstructured
	for d := range strings.SplitSeq(docs, "\n---\n") {
		objs = append(objs, obj(t, d))
	}

	for range 5 {
		rand.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })

		again, _ := crd.Build(objs)
		if !reflect.DeepEqual(names(again.Pools), names(cfg.Pools)) || !reflect.DeepEqual(names(again.BGPAdvertisements), names(cfg.BGPAdvertisements)) {
			t.Fatalf("order depends on input order")
		}
	}
}

func TestValidCondition(t *testing.T) {
	c := crd.ValidCondition(4, errors.New("something else"))
	if c.Status != metav1.ConditionFalse || c.Message != "something else" || c.ObservedGeneration != 4 {
		t.Errorf("%+v", c)
	}

	long := &crd.InvalidError{Fields: []*crd.FieldError{{Field: "spec.addresses", Message: strings.Repeat("é", 20000)}}}

	c = crd.ValidCondition(1, long)
	if len(c.Message) > 32768 || !strings.HasSuffix(c.Message, "...") || !strings.HasPrefix(c.Message, "spec.addresses: é") {
		t.Errorf("long message: %d bytes, ends %q", len(c.Message), c.Message[len(c.Message)-5:])
	}
}
