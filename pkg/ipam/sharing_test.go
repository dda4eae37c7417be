package ipam_test

import (
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

func TestSharing(t *testing.T) {
	pools := []ipam.Pool{auto("a", "10.0.0.0/30")}
	shared := func(key, sharingKey string, ports []ipam.Port, addrs ...string) ipam.Request {
		r := v4(key)
		r.SharingKey, r.Ports, r.IPs = sharingKey, ports, ips(addrs...)

		return r
	}
	udp53 := []ipam.Port{{Protocol: "UDP", Port: 53}}

	for _, tc := range []allocCase{
		{name: "same key, other ports, requested", pools: pools, before: []ipam.Request{shared("ns/a", "k", tcp(80), "10.0.0.2")},
			req: shared("ns/b", "k", tcp(443), "10.0.0.2"), want: "10.0.0.2"},
		{name: "same key, auto-assign joins the partner", pools: pools, before: []ipam.Request{v4("ns/x"), shared("ns/a", "k", tcp(80))},
			req: shared("ns/b", "k", tcp(443)), want: "10.0.0.1"},
		{name: "same port number, other protocol", pools: pools, before: []ipam.Request{shared("ns/a", "k", tcp(53), "10.0.0.2")},
			req: shared("ns/b", "k", udp53, "10.0.0.2"), want: "10.0.0.2"},
		{name: "same key, colliding port", pools: pools, before: []ipam.Request{shared("default/web", "x", tcp(80, 8080), "10.0.0.2")},
			req: shared("ns/b", "x", tcp(8080), "10.0.0.2"), wantErr: ipam.ErrInUse, errText: "10.0.0.2 is used by default/web, which shares key x but also serves TCP/8080"},
		{name: "same key, colliding port, auto-assign takes a fresh IP", pools: pools, before: []ipam.Request{shared("ns/a", "k", tcp(80))},
			req: shared("ns/b", "k", tcp(80)), want: "10.0.0.1"},
		{name: "other key never shares", pools: pools, before: []ipam.Request{shared("default/web", "y", tcp(80), "10.0.0.2")},
			req: shared("ns/b", "x", tcp(443), "10.0.0.2"), wantErr: ipam.ErrInUse, errText: "does not share key x"},
		{name: "holder without key never shares", pools: pools, before: []ipam.Request{shared("default/web", "", tcp(80), "10.0.0.2")},
			req: shared("ns/b", "x", tcp(443), "10.0.0.2"), wantErr: ipam.ErrInUse, errText: "does not share key x"},
		{name: "requester without key never shares", pools: pools, before: []ipam.Request{shared("default/web", "x", tcp(80), "10.0.0.2")},
			req: shared("ns/b", "", tcp(443), "10.0.0.2"), wantErr: ipam.ErrInUse, errText: "without a sharing key"},
		{name: "three share", pools: pools, before: []ipam.Request{shared("ns/a", "k", tcp(1), "10.0.0.3"), shared("ns/b", "k", tcp(2), "10.0.0.3")},
			req: shared("ns/c", "k", tcp(3)), want: "10.0.0.3"},
		{name: "a shared IP counts once, so the pool is not full", pools: []ipam.Pool{auto("one", "10.0.0.0/32")},
			before: []ipam.Request{shared("ns/a", "k", tcp(1)), shared("ns/b", "k", tcp(2))}, req: shared("ns/c", "k", tcp(3)), want: "10.0.0.0"},
	} {
		tc.run(t)
	}
}

func TestSharedIPFreedWithLastHolder(t *testing.T) {
	a := newAllocator(t, auto("one", "10.0.0.0/32"))
	for i, key := range []string{"ns/a", "ns/b"} {
		r := v4(key)
		r.SharingKey, r.Ports = "k", tcp(uint16(80+i))
		if _, err := a.Allocate(r); err != nil {
			t.Fatal(err)
		}
	}

	a.Release(svc("ns/a"))
	if _, err := a.Allocate(v4("ns/c")); err == nil {
		t.Fatal("an IP still held by ns/b went to an unkeyed service")
	}

	a.Release(svc("ns/b"))
	if _, err := a.Allocate(v4("ns/c")); err != nil {
		t.Fatalf("IP not freed with its last holder: %v", err)
	}
}
