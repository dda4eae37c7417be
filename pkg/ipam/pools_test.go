package ipam_test

import (
	"errors"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

func TestPoolChangesKeepAllocations(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after []ipam.Pool
	}{
		{"pool removed", []ipam.Pool{auto("b", "10.1.0.0/24")}},
		{"pool shrunk", []ipam.Pool{auto("a", "10.0.0.0/30"), auto("b", "10.1.0.0/24")}},
		{"buggy IPs now avoided", []ipam.Pool{{Name: "a", Addresses: []string{"10.0.0.0/24"}, AutoAssign: true, AvoidBuggyIPs: true}, auto("b", "10.1.0.0/24")}},
	} {
		a := newAllocator(t, auto("a", "10.0.0.0/24"), auto("b", "10.1.0.0/24"))
		if errs := a.Assign([]ipam.Claim{claim("ns/a", "", nil, "10.0.0.255"), claim("ns/b", "", nil, "10.1.0.1")}); errs != nil {
			t.Fatal(errs)
		}

		if err := a.SetPools(tc.after); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}

		out := a.Outside()
		if len(out) != 1 || out[0].Service != svc("ns/a") || out[0].Pools[0] != "" {
			t.Errorf("%s: Outside() = %+v, want ns/a alone", tc.name, out)
		}

		if got := allocate(t, a, v4("ns/a")); got != "10.0.0.255" {
			t.Errorf("%s: ns/a moved to %s; a running service keeps its IP", tc.name, got)
		}

		r := v4("ns/new")
		r.IPs = ips("10.0.0.254")
		if _, err := a.Allocate(r); tc.name == "pool removed" && !errors.Is(err, ipam.ErrOutsidePools) {
			t.Errorf("%s: an IP outside every pool was handed out: %v", tc.name, err)
		}

		a.Release(svc("ns/a"))
		r.IPs = ips("10.0.0.255")
		if _, err := a.Allocate(r); !errors.Is(err, ipam.ErrOutsidePools) {
			t.Errorf("%s: a released IP outside every pool was handed out again: %v", tc.name, err)
		}
	}
}

func TestPoolChangesRecountUsage(t *testing.T) {
	a := newAllocator(t, auto("a", "10.0.0.0/24"))
	allocate(t, a, v4("ns/a"))

	if err := a.SetPools([]ipam.Pool{auto("b", "10.0.0.0/25"), auto("c", "10.0.0.128/25")}); err != nil {
		t.Fatal(err)
	}

	for _, u := range a.Usage() {
		if want := map[string]int64{"b": 1, "c": 0}[u.Pool]; u.Used != want {
			t.Errorf("pool %s used %d, want %d", u.Pool, u.Used, want)
		}
	}

	if err := a.SetPools([]ipam.Pool{auto("b", "10.0.0.0/25"), auto("b", "10.1.0.0/25")}); err == nil {
		t.Fatal("a duplicate pool was accepted")
	}

	if u := a.Usage(); len(u) != 2 || u[0].Pool != "b" || u[1].Pool != "c" {
		t.Errorf("a refused SetPools changed the pools: %+v", u)
	}
}
