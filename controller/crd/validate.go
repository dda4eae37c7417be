package crd

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/talos-lb/talos-lb/pkg/community"
	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// Defaults the API server fills in from the schema too (deploy/crds); the Go
// side repeats them for objects that did not come through the API server.
const (
	DefaultPeerPort          = 179
	DefaultHoldTime          = 90 * time.Second
	DefaultPasswordKey       = "password"
	DefaultBFDInterval       = 300 * time.Millisecond
	DefaultBFDMultiplier     = 3
	DefaultRestartTime       = 120 * time.Second
	DefaultAggregationLength = 32
	DefaultAggregationLenV6  = 128

	// MaxPriority is the highest serviceAllocation.priority; the two values
	// above it order the pools without one (see IPAMPools).
	MaxPriority = math.MaxInt32 - 2

	// maxMD5KeyLen is Linux's TCP_MD5SIG_MAXKEYLEN.
	maxMD5KeyLen = 80
)

// --- IPAddressPool ---------------------------------------------------------

func (s *IPAddressPoolSpec) defaults() {
	if s.AutoAssign == nil {
		t := true
		s.AutoAssign = &t
	}
}

func (s *IPAddressPoolSpec) validate(fe *fieldErrors) {
	checkAddresses(fe, "spec.addresses", s.Addresses)

	sa := s.ServiceAllocation
	if sa == nil {
		return
	}

	const at = "spec.serviceAllocation"

	if sa.Priority < 0 || sa.Priority > MaxPriority {
		fe.add(at+".priority", "must be 0 (none) to %d, got %d", MaxPriority, sa.Priority)
	}

	for i, ns := range sa.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			fe.add(index(at+".namespaces", i), "%q is not a namespace name: %s", ns, strings.Join(errs, "; "))
		}
	}

	checkSelectors(fe, at+".namespaceSelectors", sa.NamespaceSelectors)
	checkSelectors(fe, at+".serviceSelectors", sa.ServiceSelectors)
}

// normalizeAddress turns a single address into a host prefix, the one form
// ipam does not take as is; everything else goes to ipam unchanged.
func normalizeAddress(s string) string {
	s = strings.TrimSpace(s)
	if strings.ContainsAny(s, "/-") {
		return s
	}

	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return s
	}

	return netip.PrefixFrom(a, a.BitLen()).String()
}

// checkAddresses has ipam compile each address alone (so every bad one is
// named by its index), then all together (so overlaps within the pool show).
func checkAddresses(fe *fieldErrors, at string, addrs []string) {
	if len(addrs) == 0 {
		fe.add(at, "required: at least one CIDR, range a-b or address")
		return
	}

	good := true

	for i, s := range addrs {
		err := ipam.New().SetPools([]ipam.Pool{{Name: "pool", Addresses: []string{normalizeAddress(s)}}})
		if err == nil {
			continue
		}

		good = false

		if strings.Contains(s, "-") {
			fe.add(index(at, i), "%q is not a valid range a-b: %v", s, cause(err))
		} else {
			fe.add(index(at, i), "%q is not a CIDR, a range a-b or an address", s)
		}
	}

	if !good {
		return
	}

	norm := make([]string, len(addrs))
	for i, s := range addrs {
		norm[i] = normalizeAddress(s)
	}

	if err := ipam.New().SetPools([]ipam.Pool{{Name: "pool", Addresses: norm}}); err != nil {
		fe.add(at, "%s", strings.ReplaceAll(poolConfigMessage(err), ` of pool "pool"`, ""))
	}
}

// cause is the innermost reason of an ipam pool error, without ipam's
// "invalid pool configuration: pool ...: address ...:" prefix, which would
// repeat what the field path already says.
func cause(err error) error {
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		if errs := m.Unwrap(); len(errs) > 0 {
			return errs[len(errs)-1]
		}
	}

	return err
}

// poolConfigMessage is an ipam error without its "invalid pool
// configuration: " prefix.
func poolConfigMessage(err error) string {
	return strings.TrimPrefix(err.Error(), ipam.ErrPoolConfig.Error()+": ")
}

// --- BGPPeer ---------------------------------------------------------------

func (s *BGPPeerSpec) defaults() {
	if s.PeerPort == 0 {
		s.PeerPort = DefaultPeerPort
	}

	if s.HoldTime == nil {
		s.HoldTime = &metav1.Duration{Duration: DefaultHoldTime}
	}

	if s.KeepaliveTime == nil && s.HoldTime.Duration >= 0 {
		s.KeepaliveTime = &metav1.Duration{Duration: (s.HoldTime.Duration / 3).Truncate(time.Second)}
	}

	if s.PasswordSecret != nil && s.PasswordSecret.Key == "" {
		s.PasswordSecret.Key = DefaultPasswordKey
	}

	if b := s.BFD; b != nil {
		if b.MinTx.Duration == 0 {
			b.MinTx.Duration = DefaultBFDInterval
		}

		if b.MinRx.Duration == 0 {
			b.MinRx.Duration = DefaultBFDInterval
		}

		if b.Multiplier == 0 {
			b.Multiplier = DefaultBFDMultiplier
		}
	}

	if g := s.GracefulRestart; g != nil && g.RestartTime.Duration == 0 {
		g.RestartTime.Duration = DefaultRestartTime
	}
}

// ValidASN says whether asn may be used for a session: not 0, not AS_TRANS
// (23456) and not the last ASN of either range (65535, 4294967295).
func ValidASN(asn uint32) bool {
	return asn != 0 && asn != 23456 && asn != 65535 && asn != math.MaxUint32
}

func (s *BGPPeerSpec) validate(fe *fieldErrors) {
	for _, f := range []struct {
		name string
		asn  uint32
	}{{"spec.myASN", s.MyASN}, {"spec.peerASN", s.PeerASN}} {
		if !ValidASN(f.asn) {
			fe.add(f.name, "required: an AS number other than 0, 23456 (AS_TRANS), 65535 and 4294967295, got %d", f.asn)
		}
	}

	peer, err := netip.ParseAddr(s.PeerAddress)

	switch {
	case s.PeerAddress == "":
		fe.add("spec.peerAddress", "required: the router's IP address")
	case err != nil:
		fe.add("spec.peerAddress", "%q is not an IP address", s.PeerAddress)
	case peer.Zone() != "":
		fe.add("spec.peerAddress", "%q carries a zone, which is not supported", s.PeerAddress)
	}

	if s.SourceAddress != "" {
		src, err := netip.ParseAddr(s.SourceAddress)

		switch {
		case err != nil || src.Zone() != "":
			fe.add("spec.sourceAddress", "%q is not an IP address", s.SourceAddress)
		case peer.IsValid() && src.Unmap().Is4() != peer.Unmap().Is4():
			fe.add("spec.sourceAddress", "%s is not of the family of peerAddress %s", src, peer)
		}
	}

	holdOK := true

	if h := s.HoldTime.Duration; h != 0 && (h < 3*time.Second || h > 65535*time.Second) {
		fe.add("spec.holdTime", "must be 0 (no keepalives) or 3s to 65535s, got %s", h)

		holdOK = false
	} else if h%time.Second != 0 {
		fe.add("spec.holdTime", "must be whole seconds, got %s", h)

		holdOK = false
	}

	if k := s.KeepaliveTime; k != nil && holdOK {
		h := s.HoldTime.Duration

		switch {
		case h == 0 && k.Duration != 0:
			fe.add("spec.keepaliveTime", "must be 0 when holdTime is 0 (no keepalives), got %s", k.Duration)
		case h != 0 && k.Duration <= 0:
			fe.add("spec.keepaliveTime", "must be positive, got %s", k.Duration)
		case h != 0 && k.Duration >= h:
			fe.add("spec.keepaliveTime", "must be shorter than holdTime (%s), got %s", h, k.Duration)
		case k.Duration%time.Second != 0:
			fe.add("spec.keepaliveTime", "must be whole seconds, got %s", k.Duration)
		}
	}

	switch {
	case s.Password != "" && s.PasswordSecret != nil:
		fe.add("spec.passwordSecret", "set either password or passwordSecret, not both")
	case len(s.Password) > maxMD5KeyLen:
		// Never show the password itself.
		fe.add("spec.password", "is %d bytes long; TCP MD5 keys are at most %d", len(s.Password), maxMD5KeyLen)
	}

	if ps := s.PasswordSecret; ps != nil {
		if ps.Name == "" {
			fe.add("spec.passwordSecret.name", "required: the name of a Secret in the BGPPeer's namespace")
		} else if errs := validation.IsDNS1123Subdomain(ps.Name); len(errs) > 0 {
			fe.add("spec.passwordSecret.name", "%q is not a Secret name: %s", ps.Name, strings.Join(errs, "; "))
		}

		if errs := validation.IsConfigMapKey(ps.Key); len(errs) > 0 {
			fe.add("spec.passwordSecret.key", "%q is not a Secret key: %s", ps.Key, strings.Join(errs, "; "))
		}
	}

	checkSelectors(fe, "spec.nodeSelectors", s.NodeSelectors)

	if b := s.BFD; b != nil {
		checkDuration(fe, "spec.bfd.minTx", b.MinTx.Duration, 10*time.Millisecond, 10*time.Second)
		checkDuration(fe, "spec.bfd.minRx", b.MinRx.Duration, 10*time.Millisecond, 10*time.Second)

		if b.Multiplier < 1 || b.Multiplier > 255 {
			fe.add("spec.bfd.multiplier", "must be 1 to 255, got %d", b.Multiplier)
		}
	}

	if g := s.GracefulRestart; g != nil {
		r := g.RestartTime.Duration
		if checkDuration(fe, "spec.gracefulRestart.restartTime", r, time.Second, 4095*time.Second) && r%time.Second != 0 {
			fe.add("spec.gracefulRestart.restartTime", "must be whole seconds, got %s", r)
		}
	}
}

// checkDuration reports d outside [lo, hi]; it says whether d is inside.
func checkDuration(fe *fieldErrors, at string, d, lo, hi time.Duration) bool {
	if d < lo || d > hi {
		fe.add(at, "must be %s to %s, got %s", lo, hi, d)
		return false
	}

	return true
}

// --- BGPAdvertisement ------------------------------------------------------

func (s *BGPAdvertisementSpec) defaults() {
	if s.AggregationLength == nil {
		l := int32(DefaultAggregationLength)
		s.AggregationLength = &l
	}

	if s.AggregationLengthV6 == nil {
		l := int32(DefaultAggregationLenV6)
		s.AggregationLengthV6 = &l
	}
}

func (s *BGPAdvertisementSpec) validate(fe *fieldErrors) {
	checkPoolRefs(fe, s.IPAddressPools, s.IPAddressPoolSelectors)

	for i, c := range s.Communities {
		if _, err := community.Parse(c); err != nil {
			msg := err.Error()
			if strings.HasPrefix(c, "large:") {
				msg = fmt.Sprintf("large communities go in spec.largeCommunities, written %q", strings.TrimPrefix(c, "large:"))
			}

			fe.add(index("spec.communities", i), "%s", msg)
		}
	}

	for i, c := range s.LargeCommunities {
		if _, err := community.ParseLarge(c); err != nil {
			fe.add(index("spec.largeCommunities", i), "%v", err)
		}
	}

	for i, p := range s.Peers {
		checkName(fe, index("spec.peers", i), "BGPPeer", p)
	}

	checkSelectors(fe, "spec.nodeSelectors", s.NodeSelectors)

	if l := *s.AggregationLength; l < 1 || l > 32 {
		fe.add("spec.aggregationLength", "must be 1 to 32, got %d", l)
	}

	if l := *s.AggregationLengthV6; l < 1 || l > 128 {
		fe.add("spec.aggregationLengthV6", "must be 1 to 128, got %d", l)
	}
}

// --- L2Advertisement -------------------------------------------------------

func (s *L2AdvertisementSpec) validate(fe *fieldErrors) {
	checkPoolRefs(fe, s.IPAddressPools, s.IPAddressPoolSelectors)
	checkSelectors(fe, "spec.nodeSelectors", s.NodeSelectors)

	for i, name := range s.Interfaces {
		if err := checkInterface(name); err != nil {
			fe.add(index("spec.interfaces", i), "%q is not an interface name: %v", name, err)
		}
	}
}

// checkInterface applies Linux's rules for link names (dev_valid_name).
func checkInterface(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > 15:
		return errors.New("longer than 15 bytes")
	case name == "." || name == "..":
		return errors.New("reserved")
	case strings.ContainsAny(name, "/: \t\n\r\v\f"):
		return errors.New("contains '/', ':' or white space")
	}

	return nil
}

// --- shared ----------------------------------------------------------------

func checkPoolRefs(fe *fieldErrors, names []string, selectors []metav1.LabelSelector) {
	for i, p := range names {
		checkName(fe, index("spec.ipAddressPools", i), "IPAddressPool", p)
	}

	checkSelectors(fe, "spec.ipAddressPoolSelectors", selectors)
}

func checkName(fe *fieldErrors, at, kind, name string) {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		fe.add(at, "%q is not a valid %s name: %s", name, kind, strings.Join(errs, "; "))
	}
}

func checkSelectors(fe *fieldErrors, at string, sels []metav1.LabelSelector) {
	for i := range sels {
		if _, err := metav1.LabelSelectorAsSelector(&sels[i]); err != nil {
			fe.add(index(at, i), "%v", err)
		}
	}
}
