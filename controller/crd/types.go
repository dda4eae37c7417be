package crd

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Resources are the plural resource names of the four kinds, for the dynamic
// client, in the order the controller should read them.
var Resources = map[string]schema.GroupVersionResource{
	KindIPAddressPool:    {Group: Group, Version: Version, Resource: "ipaddresspools"},
	KindBGPPeer:          {Group: Group, Version: Version, Resource: "bgppeers"},
	KindBGPAdvertisement: {Group: Group, Version: Version, Resource: "bgpadvertisements"},
	KindL2Advertisement:  {Group: Group, Version: Version, Resource: "l2advertisements"},
}

// Status is the status of every kind: only the Valid condition for now.
type Status struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPAddressPool is a set of addresses services may get theirs from.
// It is namespaced like MetalLB's, but the controller reads every namespace
// and pool names must be unique across namespaces: services and
// advertisements name pools without a namespace.
type IPAddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPAddressPoolSpec `json:"spec"`
	Status Status            `json:"status,omitempty"`
}

// IPAddressPoolSpec is what an IPAddressPool holds.
type IPAddressPoolSpec struct {
	// Addresses are CIDRs ("10.0.0.0/24", "fd00::/120"), inclusive ranges
	// ("10.0.0.10-10.0.0.20") or single addresses ("10.0.0.7"), of either
	// family, in any mix. At least one; no overlap, also not with another pool.
	Addresses []string `json:"addresses"`
	// AutoAssign lets services that ask for neither this pool nor one of its
	// addresses get one from it. Default true.
	AutoAssign *bool `json:"autoAssign,omitempty"`
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 or .255.
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`
	// ServiceAllocation restricts the pool to some services and orders
	// auto-assignment.
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`
}

// ServiceAllocation pins a pool to namespaces and services, as in MetalLB.
type ServiceAllocation struct {
	// Priority orders auto-assignment among the pools that may serve a
	// service: 1 goes first. 0 (unset) goes after every pool with a priority,
	// pinned pools (those with namespaces or selectors) before unpinned ones.
	Priority int `json:"priority,omitempty"`
	// Namespaces and NamespaceSelectors: the service's namespace must be one
	// of Namespaces or match one of NamespaceSelectors. Both empty: any.
	Namespaces         []string               `json:"namespaces,omitempty"`
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`
	// ServiceSelectors: the service's labels must match one of them. Empty: any.
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// BGPPeer is a router the agents of the selected nodes open a session to.
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BGPPeerSpec `json:"spec"`
	Status Status      `json:"status,omitempty"`
}

// BGPPeerSpec is one BGP session's settings.
type BGPPeerSpec struct {
	// MyASN is the nodes' AS number, PeerASN the router's; equal means iBGP.
	MyASN   uint32 `json:"myASN"`
	PeerASN uint32 `json:"peerASN"`
	// PeerAddress is the router's IP address.
	PeerAddress string `json:"peerAddress"`
	// PeerPort is the router's TCP port. Default 179.
	PeerPort uint16 `json:"peerPort,omitempty"`
	// SourceAddress pins the session's local address (and so the announced
	// next hop); it must be on the node. Default: the kernel's choice.
	SourceAddress string `json:"sourceAddress,omitempty"`
	// HoldTime is proposed in the OPEN message: 0 (no keepalives) or 3s to
	// 65535s, whole seconds. Default 90s, as in MetalLB.
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`
	// KeepaliveTime must be shorter than HoldTime (0 when HoldTime is 0).
	// Default: a third of HoldTime.
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`
	// EBGPMultiHopTTL lets an eBGP router be that many hops away: 1-255.
	// 0 (unset): directly connected. MetalLB's ebgpMultiHop: true is 255.
	EBGPMultiHopTTL uint8 `json:"ebgpMultiHopTTL,omitempty"`
	// Password is the TCP MD5 (RFC 2385) key in clear text; PasswordSecret
	// takes it from a Secret instead. At most one of the two.
	Password       string                 `json:"password,omitempty"`
	PasswordSecret *SecretKeyRef          `json:"passwordSecret,omitempty"`
	NodeSelectors  []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	// BFD, when present, runs BFD on the session so a dead link is noticed
	// in well under a second instead of after the hold time.
	BFD *BFD `json:"bfd,omitempty"`
	// GracefulRestart asks the router to keep our routes while an agent
	// restarts.
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`
}

// SecretKeyRef names one key of a Secret in the referring object's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	// Key defaults to "password", the key MetalLB reads.
	Key string `json:"key,omitempty"`
}

// BFD configures Bidirectional Forwarding Detection for a peer.
type BFD struct {
	// MinTx and MinRx are the desired transmit and required receive
	// intervals, 10ms to 10s. Default 300ms each.
	MinTx metav1.Duration `json:"minTx,omitempty"`
	MinRx metav1.Duration `json:"minRx,omitempty"`
	// Multiplier is how many missed packets declare the session down, 1-255.
	// Default 3.
	Multiplier uint32 `json:"multiplier,omitempty"`
}

// GracefulRestart configures BGP graceful restart (RFC 4724).
type GracefulRestart struct {
	Enabled bool `json:"enabled,omitempty"`
	// RestartTime is how long the router keeps our routes, 1s to 4095s,
	// whole seconds. Default 120s.
	RestartTime metav1.Duration `json:"restartTime,omitempty"`
}

// BGPAdvertisement announces the IPs of some pools from some nodes to some
// peers, with BGP attributes.
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BGPAdvertisementSpec `json:"spec,omitempty"`
	Status Status               `json:"status,omitempty"`
}

// BGPAdvertisementSpec says what to announce, from where, to whom and how.
type BGPAdvertisementSpec struct {
	// IPAddressPools and IPAddressPoolSelectors choose the pools (either
	// matching is enough); both empty: every pool.
	IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	// Communities are "ASN:value" (each 0-65535) or well-known names
	// (no-export, no-advertise, no-export-subconfed, blackhole).
	Communities []string `json:"communities,omitempty"`
	// LargeCommunities are "global:local1:local2" (each 0-4294967295).
	LargeCommunities []string `json:"largeCommunities,omitempty"`
	// LocalPref is sent to iBGP peers; 0: not sent.
	LocalPref uint32 `json:"localPref,omitempty"`
	// Peers names the BGPPeers to announce to; empty: every peer of the node.
	Peers []string `json:"peers,omitempty"`
	// NodeSelectors choose the announcing nodes (any matching); empty: all.
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	// AggregationLength announces the IPv4 prefix of that length holding the
	// service IP instead of the /32: 1-32, default 32.
	AggregationLength *int32 `json:"aggregationLength,omitempty"`
	// AggregationLengthV6 is the same for IPv6: 1-128, default 128.
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`
}

// L2Advertisement answers ARP and NDP for the IPs of some pools from one of
// the selected nodes at a time.
type L2Advertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   L2AdvertisementSpec `json:"spec,omitempty"`
	Status Status              `json:"status,omitempty"`
}

// L2AdvertisementSpec says what to announce over L2, from where.
type L2AdvertisementSpec struct {
	// IPAddressPools and IPAddressPoolSelectors choose the pools (either
	// matching is enough); both empty: every pool.
	IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	// NodeSelectors choose the nodes that may announce (any matching);
	// empty: all.
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	// Interfaces limits the announcements to these links; empty: every link
	// whose subnet holds the IP.
	Interfaces []string `json:"interfaces,omitempty"`
}

// Object is any of the four kinds, as Parse returns it.
type Object interface {
	metav1.Object
	// Ref names the object in errors and in Problems.
	Ref() Ref
}

func (p *IPAddressPool) Ref() Ref    { return refOf(KindIPAddressPool, &p.ObjectMeta) }
func (p *BGPPeer) Ref() Ref          { return refOf(KindBGPPeer, &p.ObjectMeta) }
func (a *BGPAdvertisement) Ref() Ref { return refOf(KindBGPAdvertisement, &a.ObjectMeta) }
func (a *L2Advertisement) Ref() Ref  { return refOf(KindL2Advertisement, &a.ObjectMeta) }

func refOf(kind string, m *metav1.ObjectMeta) Ref {
	return Ref{Kind: kind, Namespace: m.Namespace, Name: m.Name}
}
