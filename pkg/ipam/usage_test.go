package ipam_test

import (
	"strconv"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

func TestUsage(t *testing.T) {
	small := auto("small", "10.0.0.0/30", "fd00::/126")
	small.Priority = -1
	a := newAllocator(t, auto("huge", "fd01::/64"), small)

	dual := ipam.Request{Service: svc("ns/a"), Families: []ipam.Family{ipam.IPv4, ipam.IPv6}, Policy: ipam.RequireDualStack}
	allocate(t, a, dual)
	allocate(t, a, with(v4("ns/b"), func(r *ipam.Request) { r.Families = []ipam.Family{ipam.IPv6}; r.Pool = "huge" }))

	type row struct {
		pool              string
		family            ipam.Family
		total, free, used string
	}

	want := []row{
		{"small", ipam.IPv4, "4", "3", "1"},
		{"small", ipam.IPv6, "4", "3", "1"},
		{"huge", ipam.IPv6, "18446744073709551616", "18446744073709551615", "1"},
	}

	got := a.Usage()
	if len(got) != len(want) {
		t.Fatalf("Usage() = %+v", got)
	}

	for i, u := range got {
		if r := (row{u.Pool, u.Family, u.Total.String(), u.Free.String(), strconv.FormatInt(u.Used, 10)}); r != want[i] {
			t.Errorf("row %d: %+v, want %+v", i, r, want[i])
		}
	}
}

// A /64 costs no memory per address: allocating from it stays a handful of
// small allocations however big the pool is.
func TestHugePoolDoesNotEnumerate(t *testing.T) {
	a := newAllocator(t, auto("huge", "fd00::/64", "fd01::/48"))
	r := ipam.Request{Service: svc("ns/a"), Families: []ipam.Family{ipam.IPv6}}

	n := 0
	allocs := testing.AllocsPerRun(1000, func() {
		n++
		r.Service.Name = strconv.Itoa(n)
		if _, err := a.Allocate(r); err != nil {
			t.Fatal(err)
		}
	})

	if allocs > 20 {
		t.Errorf("%.0f allocations per service from a /64", allocs)
	}
}
