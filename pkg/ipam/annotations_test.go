package ipam_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

func TestRequestedIPs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spec   string
		annots map[string]string
		want   string // fmt of the IPs, or the error text
	}{
		{"nothing", "", nil, "[]"},
		{"spec field", "10.0.0.1", nil, "[10.0.0.1]"},
		{"ours, dual-stack, spaces", "", map[string]string{ipam.AnnotationIPs: " 10.0.0.1 , fd00::1"}, "[10.0.0.1 fd00::1]"},
		{"MetalLB", "", map[string]string{ipam.AnnotationMetalLBIPs: "10.0.0.2"}, "[10.0.0.2]"},
		{"old MetalLB", "", map[string]string{ipam.AnnotationMetalLBOldIPs: "10.0.0.3"}, "[10.0.0.3]"},
		{"mapped IPv4 is IPv4", "::ffff:10.0.0.4", nil, "[10.0.0.4]"},
		{"sources agree in any order", "", map[string]string{ipam.AnnotationIPs: "fd00::1,10.0.0.1", ipam.AnnotationMetalLBIPs: "10.0.0.1,fd00::1"}, "[fd00::1 10.0.0.1]"},
		{"sources disagree", "10.0.0.9", map[string]string{ipam.AnnotationMetalLBIPs: "10.0.0.1"},
			"invalid request: metallb.io/loadBalancerIPs asks for [10.0.0.1] but spec.loadBalancerIP for [10.0.0.9]"},
		{"garbage", "", map[string]string{ipam.AnnotationIPs: "10.0.0.1,nope"}, `lb.talos-lb.dev/loadBalancerIPs: invalid request: "nope"`},
		{"empty entry", "", map[string]string{ipam.AnnotationIPs: "10.0.0.1,"}, `invalid request: ""`},
		{"twice", "", map[string]string{ipam.AnnotationIPs: "10.0.0.1,10.0.0.1"}, "10.0.0.1 listed twice"},
		{"zone", "fe80::1%eth0", nil, "has a zone"},
	} {
		got, err := ipam.RequestedIPs(tc.spec, tc.annots)
		if err != nil {
			if !errors.Is(err, ipam.ErrInvalid) || !contains(err, tc.want) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			}

			continue
		}

		if s := fmt.Sprint(got); s != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, s, tc.want)
		}
	}
}
