package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/desired"
	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/controller/push/pushtest"
	"github.com/talos-lb/talos-lb/controller/reconcile"
	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// shape is the simulated cluster's mix, printed with the results.
type shape struct {
	nodes, services, namespaces, racks, controlPlanes int
	// Per mille of the services.
	localPM, dualPM, sharedPM, requestedPM int
}

const (
	rackLabel = "topology.kubernetes.io/zone"
	bgpLabel  = "lb.talos-lb.dev/bgp"
	workerKey = "node-role.kubernetes.io/worker"
	cpKey     = "node-role.kubernetes.io/control-plane"
	agentPort = 50070
)

func (s shape) String() string {
	pm := func(v int) string { return fmt.Sprintf("%d (%.1f %%)", s.services*v/1000, float64(v)/10) }

	return fmt.Sprintf("%d Ready nodes in %d racks (%d control planes with %s, so not eligible), "+
		"%d LoadBalancer Services of class %s in %d namespaces, each with an EndpointSlice of 2–3 endpoints; "+
		"externalTrafficPolicy Local: %s; dual-stack (PreferDualStack): %s; in sharing-key pairs (TCP/UDP 53): %s; "+
		"requested IP (metallb.io/loadBalancerIPs): %s; the rest eTP Cluster, single-stack IPv4, auto-assigned",
		s.nodes, s.racks, s.controlPlanes, desired.ExcludeLabel, s.services, lbservice.DefaultClass, s.namespaces,
		pm(s.localPM), pm(s.dualPM), pm(s.sharedPM), pm(s.requestedPM))
}

// sim is the simulated cluster: the informers' snapshot and the CRD configuration.
type sim struct {
	shape shape
	cl    *reconcile.Cluster
	cfg   *reconcile.Config
	rng   *rand.Rand
	// byKey indexes cl.Services for the writer.
	byKey map[ipam.ServiceKey]int
	age   int
}

// newSim builds the cluster; agents[i] is where node i's agent listens (the
// Node's agent-endpoint annotation), or "" for the Node's InternalIP.
func newSim(s shape, agents []string) *sim {
	m := &sim{
		shape: s,
		cl:    &reconcile.Cluster{NamespaceLabels: map[string]map[string]string{}},
		rng:   rand.New(rand.NewPCG(1, 2)), //nolint:gosec // a reproducible cluster, not a secret
		byKey: map[ipam.ServiceKey]int{},
	}

	for i := range s.nodes {
		m.cl.Nodes = append(m.cl.Nodes, m.node(i, agents))
	}

	for i := range s.namespaces {
		m.cl.NamespaceLabels[namespace(i)] = map[string]string{
			"kubernetes.io/metadata.name": namespace(i),
			"team":                        fmt.Sprintf("team-%d", i%7),
		}
	}

	for range s.services {
		m.addService()
	}

	m.cl.Slices = append(m.cl.Slices, apiServerSlice(s.controlPlanes))
	m.cfg = config()

	return m
}

func namespace(i int) string { return fmt.Sprintf("ns-%02d", i) }

func (m *sim) node(i int, agents []string) *corev1.Node {
	labels := map[string]string{
		"kubernetes.io/hostname": pushtest.NodeName(i),
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
		rackLabel:                fmt.Sprintf("rack-%d", i%m.shape.racks),
	}

	if i < m.shape.controlPlanes {
		labels[cpKey] = ""
		labels[desired.ExcludeLabel] = ""
	} else {
		labels[workerKey] = ""
		labels[bgpLabel] = "true"
	}

	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: pushtest.NodeName(i), Labels: labels, Annotations: map[string]string{}},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{
				{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
				{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse},
				{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse},
				{Type: corev1.NodeReady, Status: corev1.ConditionTrue},
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}).String()},
				{Type: corev1.NodeHostName, Address: pushtest.NodeName(i)},
			},
		},
	}

	if i < len(agents) && agents[i] != "" {
		n.Annotations[reconcile.AnnotationAgentEndpoint] = agents[i]
	}

	return n
}

var class = lbservice.DefaultClass

// addService appends the next Service of the mix and its EndpointSlice.
func (m *sim) addService() {
	i := len(m.cl.Services)
	s := m.shape
	ns := namespace(i % s.namespaces)
	name := fmt.Sprintf("svc-%05d", i)
	slot := i % 1000 // position in the mix, per mille

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, UID: types.UID("uid-" + name[4:]),
			CreationTimestamp: metav1.NewTime(time.Unix(1_700_000_000+int64(m.age), 0)),
			Labels:            map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": ns},
			Annotations:       map[string]string{},
		},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class,
			Selector:              map[string]string{"app.kubernetes.io/name": name},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
				{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP},
			},
		},
	}
	m.age++

	single := corev1.IPFamilyPolicySingleStack
	svc.Spec.IPFamilyPolicy = &single

	// Slots are disjoint so the shares add up as stated.
	switch {
	case slot < s.localPM:
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	case slot < s.localPM+s.dualPM:
		prefer := corev1.IPFamilyPolicyPreferDualStack
		svc.Spec.IPFamilyPolicy = &prefer
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	case slot < s.localPM+s.dualPM+s.sharedPM:
		// Pairs: DNS over TCP and over UDP on one IP.
		svc.Annotations[lbservice.AnnotationSharing] = fmt.Sprintf("dns-%d", i/2)
		proto := corev1.ProtocolTCP
		if i%2 == 1 {
			proto = corev1.ProtocolUDP
		}

		svc.Spec.Ports = []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: proto}}
	case slot < s.localPM+s.dualPM+s.sharedPM+s.requestedPM:
		// Migrated from MetalLB: an IP of its own from the top of the pool.
		k := i/1000*s.requestedPM + slot - (s.localPM + s.dualPM + s.sharedPM)
		svc.Annotations[ipam.AnnotationMetalLBIPs] = netip.AddrFrom4([4]byte{10, 96, byte(255 - k/250), byte(1 + k%250)}).String()
	}

	m.byKey[lbservice.Key(svc)] = len(m.cl.Services)
	m.cl.Services = append(m.cl.Services, svc)
	m.cl.Slices = append(m.cl.Slices, m.slice(svc))
}

// slice is the Service's EndpointSlice: 2 or 3 ready endpoints on random worker nodes.
func (m *sim) slice(svc *corev1.Service) *discoveryv1.EndpointSlice {
	port, proto := svc.Spec.Ports[0].Port, svc.Spec.Ports[0].Protocol
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace, Name: svc.Name + "-abcde",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: &port, Protocol: &proto}},
	}

	for range 2 + m.rng.IntN(2) {
		n := m.shape.controlPlanes + m.rng.IntN(m.shape.nodes-m.shape.controlPlanes)
		node := pushtest.NodeName(n)
		ready := true
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{netip.AddrFrom4([4]byte{10, 244, byte(n >> 8), byte(m.rng.IntN(250))}).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			NodeName:   &node,
		})
	}

	return es
}

// apiServerSlice is default/kubernetes with the control planes' addresses.
func apiServerSlice(controlPlanes int) *discoveryv1.EndpointSlice {
	port, name, proto := int32(6443), "https", corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: corev1.NamespaceDefault, Name: "kubernetes",
			Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}

	for i := range controlPlanes {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}).String()},
		})
	}

	return es
}

// config is one pool (an IPv4 /16 and an IPv6 /112), an L2 advertisement on
// every node, a BGP advertisement on the nodes labelled for BGP, and two BGP
// peers (route reflectors) for those nodes.
func config() *reconcile.Config {
	bgpNodes := func(l map[string]string) bool { return l[bgpLabel] == "true" }

	peer := func(name, addr string) desired.Peer {
		return desired.Peer{Nodes: bgpNodes, Spec: &resourcepb.PushedBgpPeer{
			Peer:     &resourcepb.BgpPeerSpec{Name: name, Address: addr, Asn: 64512, HoldTime: durationpb.New(90 * time.Second), Bfd: true},
			LocalAsn: 64513,
		}}
	}

	return &reconcile.Config{
		Pools: []ipam.Pool{{
			Name: "default", Addresses: []string{"10.96.0.0/16", "fd00:10:96::/112"},
			AutoAssign: true, AvoidBuggyIPs: true,
		}},
		PoolLabels: map[string]map[string]string{"default": {"tier": "public"}},
		L2:         []desired.L2Rule{{Name: "l2"}},
		BGP: []desired.BGPRule{{
			Nodes: bgpNodes,
			Spec:  &resourcepb.BgpAdvertisementRule{Name: "bgp", Communities: []string{"64512:100"}, LocalPref: 100},
		}},
		Peers: []desired.Peer{peer("rr-1", "172.31.0.1"), peer("rr-2", "172.31.0.2")},
	}
}

// writer applies status writes to the snapshot, as the API server and the
// informers would, and counts them and the Events.
type writer struct {
	m              *sim
	writes, events int
}

func (w *writer) UpdateServiceStatus(_ context.Context, svc *corev1.Service) error {
	i, ok := w.m.byKey[lbservice.Key(svc)]
	if !ok {
		return fmt.Errorf("no Service %s/%s", svc.Namespace, svc.Name)
	}

	w.m.cl.Services[i] = svc
	w.writes++

	return nil
}

func (w *writer) Event(*corev1.Service, string, string, string) {
	w.events++
}
