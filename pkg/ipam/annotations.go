package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Annotations that request IPs, in the order RequestedIPs reads them. MetalLB's
// are honoured so Services migrate unchanged.
const (
	AnnotationIPs           = "lb.talos-lb.dev/loadBalancerIPs"
	AnnotationMetalLBIPs    = "metallb.io/loadBalancerIPs"
	AnnotationMetalLBOldIPs = "metallb.universe.tf/loadBalancerIPs"
)

// ParseIPs reads a comma-separated list of IPs, as the annotations carry them.
func ParseIPs(s string) ([]netip.Addr, error) {
	var ips []netip.Addr

	for field := range strings.SplitSeq(s, ",") {
		ip, err := parseAddr(field)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrInvalid, strings.TrimSpace(field), err)
		}

		if slices.Contains(ips, ip) {
			return nil, fmt.Errorf("%w: %s listed twice", ErrInvalid, ip)
		}

		ips = append(ips, ip)
	}

	return ips, nil
}

// RequestedIPs gathers the IPs a Service asks for from its annotations and
// spec.loadBalancerIP. Several sources may be set, as during a migration, but
// they must agree: silently preferring one would hide the user's mistake.
func RequestedIPs(loadBalancerIP string, annotations map[string]string) ([]netip.Addr, error) {
	sources := []struct{ name, value string }{
		{AnnotationIPs, annotations[AnnotationIPs]},
		{AnnotationMetalLBIPs, annotations[AnnotationMetalLBIPs]},
		{AnnotationMetalLBOldIPs, annotations[AnnotationMetalLBOldIPs]},
		{"spec.loadBalancerIP", loadBalancerIP},
	}

	var (
		ips  []netip.Addr
		from string
	)

	for _, src := range sources {
		if strings.TrimSpace(src.value) == "" {
			continue
		}

		got, err := ParseIPs(src.value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src.name, err)
		}

		if from == "" {
			ips, from = got, src.name
		} else if !sameSet(ips, got) {
			return nil, fmt.Errorf("%w: %s asks for %v but %s for %v", ErrInvalid, from, ips, src.name, got)
		}
	}

	return ips, nil
}

func sameSet(a, b []netip.Addr) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(ip netip.Addr) bool { return !slices.Contains(b, ip) })
}
