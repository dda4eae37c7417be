package ipam_test

import (
	"errors"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

func claim(key, sharingKey string, ports []ipam.Port, addrs ...string) ipam.Claim {
	r := v4(key)
	r.SharingKey, r.Ports = sharingKey, ports

	return ipam.Claim{Request: r, IPs: ips(addrs...)}
}

func TestAssign(t *testing.T) {
	for _, tc := range []struct {
		name   string
		claims []ipam.Claim
		loaded map[string]string // service → IPs after Assign
		errs   []string
	}{
		{
			name:   "loads without reallocating",
			claims: []ipam.Claim{claim("ns/a", "", nil, "10.0.0.7"), claim("ns/b", "", nil, "10.0.0.3", "fd00::9")},
			loaded: map[string]string{"ns/a": "10.0.0.7", "ns/b": "10.0.0.3,fd00::9"},
		},
		{
			name:   "compatible sharing",
			claims: []ipam.Claim{claim("ns/a", "k", tcp(80), "10.0.0.7"), claim("ns/b", "k", tcp(443), "10.0.0.7")},
			loaded: map[string]string{"ns/a": "10.0.0.7", "ns/b": "10.0.0.7"},
		},
		{
			name:   "conflict: the earlier claim keeps the IP, the later is reported whole",
			claims: []ipam.Claim{claim("ns/old", "", nil, "10.0.0.7"), claim("ns/new", "", nil, "fd00::1", "10.0.0.7")},
			loaded: map[string]string{"ns/old": "10.0.0.7"},
			errs:   []string{"status of ns/new not loaded: 10.0.0.7 is used by ns/old, and a service without a sharing key never shares"},
		},
		{
			name:   "conflict: colliding ports",
			claims: []ipam.Claim{claim("ns/a", "k", tcp(80), "10.0.0.7"), claim("ns/b", "k", tcp(80), "10.0.0.7")},
			loaded: map[string]string{"ns/a": "10.0.0.7"},
			errs:   []string{"ns/b not loaded: 10.0.0.7 is used by ns/a, which shares key k but also serves TCP/80"},
		},
		{
			name:   "outside every pool is loaded",
			claims: []ipam.Claim{claim("ns/a", "", nil, "192.168.1.1")},
			loaded: map[string]string{"ns/a": "192.168.1.1"},
		},
		{
			name:   "an IP listed twice",
			claims: []ipam.Claim{claim("ns/a", "", nil, "10.0.0.1", "10.0.0.1")},
			loaded: map[string]string{},
			errs:   []string{"10.0.0.1 listed twice"},
		},
	} {
		a := newAllocator(t, auto("a", "10.0.0.0/24", "fd00::/120"))
		errs := a.Assign(tc.claims)

		if len(errs) != len(tc.errs) {
			t.Errorf("%s: errors %v, want %q", tc.name, errs, tc.errs)
			continue
		}

		for i, err := range errs {
			var ce *ipam.ClaimError
			if !errors.As(err, &ce) || !contains(err, tc.errs[i]) {
				t.Errorf("%s: error %v, want a ClaimError with %q", tc.name, err, tc.errs[i])
			}
		}

		got := map[string]string{}
		for _, al := range a.Allocations() {
			got[al.Service.String()] = ipStrings(al)
		}

		if len(got) != len(tc.loaded) {
			t.Errorf("%s: loaded %v, want %v", tc.name, got, tc.loaded)
		}

		for k, v := range tc.loaded {
			if got[k] != v {
				t.Errorf("%s: %s holds %q, want %q", tc.name, k, got[k], v)
			}
		}
	}
}

func TestAssignThenAllocateKeeps(t *testing.T) {
	a := newAllocator(t, auto("a", "10.0.0.0/24"))
	if errs := a.Assign([]ipam.Claim{claim("ns/a", "", nil, "10.0.0.42")}); errs != nil {
		t.Fatal(errs)
	}

	if got := allocate(t, a, v4("ns/a")); got != "10.0.0.42" {
		t.Errorf("after rebuild ns/a moved to %s", got)
	}

	if got := allocate(t, a, with(v4("ns/b"), func(r *ipam.Request) { r.IPs = ips("10.0.0.1") })); got != "10.0.0.1" {
		t.Errorf("ns/b: %s", got)
	}

	if _, err := a.Allocate(with(v4("ns/c"), func(r *ipam.Request) { r.IPs = ips("10.0.0.42") })); !errors.Is(err, ipam.ErrInUse) {
		t.Errorf("an IP loaded by Assign was handed out again: %v", err)
	}
}
