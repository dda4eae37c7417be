package ipam_test

import (
	"errors"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// allocate fails the test when r is refused.
func allocate(t *testing.T, a *ipam.Allocator, r ipam.Request) string {
	t.Helper()

	al, err := a.Allocate(r)
	if err != nil {
		t.Fatalf("%s: %v", r.Service, err)
	}

	return ipStrings(al)
}

func TestAllocateIsIdempotent(t *testing.T) {
	a := newAllocator(t, auto("a", "10.0.0.0/24", "fd00::/120"))
	r := v4("ns/a")

	first := allocate(t, a, r)
	allocate(t, a, v4("ns/b"))

	if again := allocate(t, a, r); again != first {
		t.Errorf("second Allocate moved ns/a from %s to %s", first, again)
	}

	// A service that gains a family keeps the IP it had and adds the other.
	r.Families, r.Policy = []ipam.Family{ipam.IPv4, ipam.IPv6}, ipam.PreferDualStack
	if got := allocate(t, a, r); got != first+",fd00::" {
		t.Errorf("going dual-stack: %s, want %s,fd00::", got, first)
	}

	// One that drops a family gives it back.
	r.Families = []ipam.Family{ipam.IPv6}
	if got := allocate(t, a, r); got != "fd00::" {
		t.Errorf("going IPv6 only: %s", got)
	}

	if got := allocate(t, a, with(v4("ns/c"), func(r *ipam.Request) { r.IPs = ips(first) })); got != first {
		t.Errorf("the IPv4 address ns/a gave back cannot be had again: got %s", got)
	}
}

func TestAllocateMovesInvalidHoldings(t *testing.T) {
	a := newAllocator(t, auto("a", "10.0.0.0/24"), ipam.Pool{Name: "b", Addresses: []string{"10.1.0.0/24"}})
	r := v4("ns/a")
	allocate(t, a, r)

	r.Pool = "b"
	if got := allocate(t, a, r); got != "10.1.0.0" {
		t.Errorf("naming pool b: %s", got)
	}

	r.IPs = ips("10.1.0.9")
	if got := allocate(t, a, r); got != "10.1.0.9" {
		t.Errorf("requesting 10.1.0.9: %s", got)
	}

	// Sharing that no longer holds (a port now collides) moves the newcomer.
	s := v4("ns/s1")
	s.SharingKey, s.Ports = "k", tcp(80)
	allocate(t, a, s)

	s2 := v4("ns/s2")
	s2.SharingKey, s2.Ports = "k", tcp(443)
	shared := allocate(t, a, s2)

	s2.Ports = tcp(80)
	if got := allocate(t, a, s2); got == shared {
		t.Errorf("ns/s2 kept %s although its port now collides with ns/s1", got)
	}
}

func TestFailedAllocateChangesNothing(t *testing.T) {
	a := newAllocator(t, auto("a", "10.0.0.0/24"))
	allocate(t, a, v4("ns/web"))

	r := v4("ns/a")
	before := allocate(t, a, r)

	r.IPs = ips("10.0.0.0") // held by ns/web
	if _, err := a.Allocate(r); !errors.Is(err, ipam.ErrInUse) {
		t.Fatalf("taking ns/web's IP: %v", err)
	}

	if al, _ := a.Get(svc("ns/a")); ipStrings(al) != before {
		t.Errorf("failed Allocate changed ns/a from %s to %s", before, ipStrings(al))
	}
}

func TestRelease(t *testing.T) {
	a := newAllocator(t, auto("a", "10.0.0.0/31"))
	allocate(t, a, v4("ns/a"))
	allocate(t, a, v4("ns/b"))

	if _, err := a.Allocate(v4("ns/c")); !errors.Is(err, ipam.ErrExhausted) {
		t.Fatalf("full pool: %v", err)
	}

	if !a.Release(svc("ns/a")) || a.Release(svc("ns/a")) {
		t.Error("Release should report true once, then false")
	}

	if _, ok := a.Get(svc("ns/a")); ok {
		t.Error("ns/a still holds an IP")
	}

	if got := allocate(t, a, v4("ns/c")); got != "10.0.0.0" {
		t.Errorf("ns/c got %s, want the released 10.0.0.0", got)
	}
}

func TestNextFitDelaysReuse(t *testing.T) {
	a := newAllocator(t, auto("a", "10.0.0.0/24"))
	allocate(t, a, v4("ns/a"))
	a.Release(svc("ns/a"))

	if got := allocate(t, a, v4("ns/b")); got != "10.0.0.1" {
		t.Errorf("ns/b got %s: a just-released IP should wait until the pool wraps", got)
	}
}
