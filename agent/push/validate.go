package push

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/community"
)

// peerName is what a pushed peer may be called: its name becomes a resource
// ID and the name of its password file, so it must be a plain file name. It
// fits Kubernetes object names (DNS subdomains).
var peerName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)

// Validate checks a pushed state for the node it was pushed to. The error
// names the first thing wrong, by its field path ("service_ips[3].address").
// Entries of an L2 ranking naming nodes this agent does not know are fine:
// the agent cannot know every node.
func Validate(node string, s *resourcepb.NodeDesiredState) error {
	switch {
	case s == nil:
		return errors.New("the push carries no state")
	case s.GetNode() == "":
		return fmt.Errorf("state names no node (pushed to %s)", node)
	case s.GetNode() != node:
		return fmt.Errorf("state for %s pushed to %s", s.GetNode(), node)
	case s.GetGeneration() == 0:
		return errors.New("generation 0: a pushed state needs a generation above 0")
	}

	sets, err := validateNodeSets(s.GetNodeSets())
	if err != nil {
		return err
	}

	advs, err := validateAdvertisements(s.GetBgpAdvertisements())
	if err != nil {
		return err
	}

	seen := make(map[netip.Addr]int, len(s.GetServiceIps()))

	for i, sip := range s.GetServiceIps() {
		at := fmt.Sprintf("service_ips[%d]", i)

		addr, err := validateServiceIP(at, sip, sets, advs)
		if err != nil {
			return err
		}

		if j, dup := seen[addr]; dup {
			return fmt.Errorf("%s.address %s repeats service_ips[%d]", at, addr, j)
		}

		seen[addr] = i
	}

	peers := make(map[string]int, len(s.GetBgpPeers()))

	for i, p := range s.GetBgpPeers() {
		at := fmt.Sprintf("bgp_peers[%d]", i)

		if err := validatePeer(at, p); err != nil {
			return err
		}

		name := p.GetPeer().GetName()
		if j, dup := peers[name]; dup {
			return fmt.Errorf("%s.peer.name %q repeats bgp_peers[%d]", at, name, j)
		}

		peers[name] = i
	}

	for i, e := range s.GetApiEndpoints() {
		if err := validateHostPort(e); err != nil {
			return fmt.Errorf("api_endpoints[%d] %q: %w", i, e, err)
		}
	}

	for i, r := range s.GetIneligible() {
		if r.GetNode() == "" || r.GetReason() == "" {
			return fmt.Errorf("ineligible[%d] needs a node and a reason, has %q and %q", i, r.GetNode(), r.GetReason())
		}
	}

	return nil
}

// validateNodeSets checks names are set and unique. Node names inside a
// set are not checked: the agent does not know every node.
func validateNodeSets(sets []*resourcepb.NodeSet) (map[string]bool, error) {
	names := make(map[string]int, len(sets))

	for i, set := range sets {
		name := set.GetName()
		if name == "" {
			return nil, fmt.Errorf("node_sets[%d].name is empty", i)
		}

		if j, dup := names[name]; dup {
			return nil, fmt.Errorf("node_sets[%d].name %q repeats node_sets[%d]", i, name, j)
		}

		names[name] = i
	}

	out := make(map[string]bool, len(names))
	for n := range names {
		out[n] = true
	}

	return out, nil
}

func validateAdvertisements(advs []*resourcepb.BgpAdvertisementRule) (map[string]bool, error) {
	names := make(map[string]int, len(advs))

	for i, a := range advs {
		at := fmt.Sprintf("bgp_advertisements[%d]", i)

		if a.GetName() == "" {
			return nil, fmt.Errorf("%s.name is empty", at)
		}

		if j, dup := names[a.GetName()]; dup {
			return nil, fmt.Errorf("%s.name %q repeats bgp_advertisements[%d]", at, a.GetName(), j)
		}

		names[a.GetName()] = i

		if l := a.GetAggregationLength(); l > 32 {
			return nil, fmt.Errorf("%s.aggregation_length %d is longer than an IPv4 address (32 bits)", at, l)
		}

		if l := a.GetAggregationLengthV6(); l > 128 {
			return nil, fmt.Errorf("%s.aggregation_length_v6 %d is longer than an IPv6 address (128 bits)", at, l)
		}

		for k, c := range a.GetCommunities() {
			if _, err := community.Parse(c); err != nil {
				return nil, fmt.Errorf("%s.communities[%d]: %w", at, k, err)
			}
		}

		for k, c := range a.GetLargeCommunities() {
			if _, err := community.ParseLarge(c); err != nil {
				return nil, fmt.Errorf("%s.large_communities[%d]: %w", at, k, err)
			}
		}
	}

	out := make(map[string]bool, len(names))
	for n := range names {
		out[n] = true
	}

	return out, nil
}

func validateServiceIP(at string, sip *resourcepb.ServiceIPSpec, sets, advs map[string]bool) (netip.Addr, error) {
	if sip == nil {
		return netip.Addr{}, fmt.Errorf("%s is empty", at)
	}

	addr, err := netip.ParseAddr(sip.GetAddress())

	switch {
	case err != nil:
		return addr, fmt.Errorf("%s.address %q is not an IP address", at, sip.GetAddress())
	case addr.Zone() != "":
		return addr, fmt.Errorf("%s.address %q carries a zone", at, sip.GetAddress())
	case addr.String() != sip.GetAddress():
		// The address is the resource ID: one spelling per address.
		return addr, fmt.Errorf("%s.address %q is not in canonical form (%s)", at, sip.GetAddress(), addr)
	case addr.IsUnspecified() || addr.IsMulticast() || addr.IsLoopback():
		return addr, fmt.Errorf("%s.address %s cannot be a service IP (unspecified, multicast or loopback)", at, addr)
	}

	if l2 := sip.GetL2(); l2 != nil {
		if err := checkSet(at+".l2.node_set", l2.GetNodeSet(), sets); err != nil {
			return addr, err
		}
	}

	for j, b := range sip.GetBgp() {
		bat := fmt.Sprintf("%s.bgp[%d]", at, j)

		switch {
		case b.GetAdvertisement() == "":
			return addr, fmt.Errorf("%s.advertisement is empty", bat)
		case !advs[b.GetAdvertisement()]:
			return addr, fmt.Errorf("%s.advertisement %q is not in bgp_advertisements", bat, b.GetAdvertisement())
		}

		if err := checkSet(bat+".node_set", b.GetNodeSet(), sets); err != nil {
			return addr, err
		}
	}

	return addr, nil
}

func checkSet(at, name string, sets map[string]bool) error {
	switch {
	case name == "":
		return fmt.Errorf("%s is empty", at)
	case !sets[name]:
		return fmt.Errorf("%s %q is not in node_sets", at, name)
	}

	return nil
}

func validatePeer(at string, p *resourcepb.PushedBgpPeer) error {
	spec := p.GetPeer()

	switch {
	case spec == nil:
		return fmt.Errorf("%s.peer is missing", at)
	case spec.GetName() == "":
		return fmt.Errorf("%s.peer.name is empty", at)
	case !peerName.MatchString(spec.GetName()):
		return fmt.Errorf("%s.peer.name %q: want 1-253 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit", at, spec.GetName())
	case spec.GetAsn() == 0:
		return fmt.Errorf("%s.peer.asn is missing (peer %s)", at, spec.GetName())
	case spec.GetPort() > 65535:
		return fmt.Errorf("%s.peer.port %d is not a port", at, spec.GetPort())
	}

	addr, err := netip.ParseAddr(spec.GetAddress())
	if err != nil || addr.Zone() != "" {
		return fmt.Errorf("%s.peer.address %q is not an IP address (peer %s)", at, spec.GetAddress(), spec.GetName())
	}

	if la := spec.GetLocalAddress(); la != "" {
		local, err := netip.ParseAddr(la)
		if err != nil {
			return fmt.Errorf("%s.peer.local_address %q is not an IP address", at, la)
		}

		if local.Is4() != addr.Is4() {
			return fmt.Errorf("%s.peer.local_address %s is not of the family of address %s", at, local, addr)
		}
	}

	return nil
}

func validateHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return errors.New("want host:port")
	}

	if host == "" {
		return errors.New("no host")
	}

	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q is not 1-65535", port)
	}

	return nil
}
