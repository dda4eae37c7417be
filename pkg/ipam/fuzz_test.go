package ipam_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// fuzzPools are two pool layouts the fuzzer switches between: small enough
// to exhaust, and the second removes one pool and shrinks another.
var fuzzPools = [2][]ipam.Pool{
	{
		{Name: "p1", Addresses: []string{"10.0.0.0/29"}, AutoAssign: true, AvoidBuggyIPs: true, Priority: 1},
		{Name: "p2", Addresses: []string{"10.0.1.254-10.0.2.1", "fd00::/126"}, AutoAssign: true},
		{Name: "manual", Addresses: []string{"10.0.3.0/30"}},
	},
	{
		{Name: "p2", Addresses: []string{"10.0.2.0/31", "fd00::/127"}, AutoAssign: true},
		{Name: "manual", Addresses: []string{"10.0.3.0/30"}},
	},
}

var fuzzIPs = ips("10.0.0.0", "10.0.0.1", "10.0.0.7", "10.0.2.0", "10.0.3.1", "fd00::1", "fd00::3", "10.9.9.9")

// fuzzRequest decodes one request from three bytes.
func fuzzRequest(svcByte, shape, wish byte) ipam.Request {
	r := ipam.Request{
		Service:    ipam.ServiceKey{Namespace: "ns", Name: fmt.Sprint(svcByte % 8)},
		Families:   [][]ipam.Family{{ipam.IPv4}, {ipam.IPv6}, {ipam.IPv4, ipam.IPv6}, {ipam.IPv6, ipam.IPv4}}[shape%4],
		SharingKey: []string{"", "k1", "k2"}[shape/4%3],
		Ports:      [][]ipam.Port{tcp(80), tcp(443), tcp(80, 443), {{Protocol: "UDP", Port: 80}}}[shape/12%4],
	}

	if len(r.Families) == 2 {
		r.Policy = ipam.FamilyPolicy(1 + shape/48%2)
	}

	switch wish % 4 {
	case 1:
		r.IPs = fuzzIPs[int(wish/4)%len(fuzzIPs) : int(wish/4)%len(fuzzIPs)+1]
	case 2:
		r.Pool = []string{"p1", "p2", "manual", "gone"}[wish/4%4]
	}

	return r
}

func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 0, 1, 2, 0, 1, 9, 0, 2, 17, 1, 3, 3, 3, 0, 4, 0, 0, 0, 5, 1})
	f.Add([]byte{0, 0, 4, 0, 0, 1, 4, 0, 0, 2, 4, 0, 0, 3, 4, 0, 4, 0, 0, 0, 0, 4, 16, 1})
	f.Add([]byte{3, 0, 0, 1, 3, 1, 0, 1, 0, 2, 2, 2, 2, 2, 2, 6})

	f.Fuzz(fuzzOps)
}

// fuzzOps runs ops, four bytes each, checking the invariants after each.
func fuzzOps(t *testing.T, ops []byte) {
	a := newAllocator(t, fuzzPools[0]...)
	held := map[ipam.ServiceKey]ipam.Request{} // the request behind what each service holds

	for len(ops) >= 4 {
		op, r, ipByte := ops[0]%5, fuzzRequest(ops[1], ops[2], ops[3]), ops[3]
		ops = ops[4:]

		switch op {
		case 0, 1:
			before, _ := a.Get(r.Service)
			al, err := a.Allocate(r)
			if err == nil {
				held[r.Service] = r
				checkInPools(t, before, al)
			}
		case 2:
			a.Release(r.Service)
			delete(held, r.Service)
		case 3:
			c := ipam.Claim{Request: r, IPs: fuzzIPs[int(ipByte)%len(fuzzIPs):][:1]}
			if errs := a.Assign([]ipam.Claim{c}); errs == nil {
				held[r.Service] = r
			}
		case 4:
			if err := a.SetPools(fuzzPools[r.Service.Name[0]%2]); err != nil {
				t.Fatal(err)
			}
		}

		checkInvariants(t, a, held)
	}
}

// checkInPools fails when Allocate handed out an IP outside every pool that
// the service did not already hold.
func checkInPools(t *testing.T, before, after ipam.Allocation) {
	for i, ip := range after.IPs {
		if after.Pools[i] == "" && !slices.Contains(before.IPs, ip) {
			t.Fatalf("%s was given %s, which is outside every pool", after.Service, ip)
		}
	}
}

// checkInvariants: holders of one IP all share one key with disjoint ports,
// and no pool counts more addresses than it has or than are really held.
func checkInvariants(t *testing.T, a *ipam.Allocator, held map[ipam.ServiceKey]ipam.Request) {
	holders := map[netip.Addr][]ipam.Request{}
	inPool := map[string]map[netip.Addr]bool{}

	for _, al := range a.Allocations() {
		for i, ip := range al.IPs {
			r := held[al.Service]
			for _, other := range holders[ip] {
				if r.SharingKey == "" || other.SharingKey != r.SharingKey || collide(r.Ports, other.Ports) {
					t.Fatalf("%s shared by incompatible %s (key %q, %v) and %s (key %q, %v)", ip, other.Service, other.SharingKey, other.Ports, r.Service, r.SharingKey, r.Ports)
				}
			}

			holders[ip] = append(holders[ip], r)

			if inPool[al.Pools[i]] == nil {
				inPool[al.Pools[i]] = map[netip.Addr]bool{}
			}

			inPool[al.Pools[i]][ip] = true
		}
	}

	perPool := map[string]int64{}
	for _, u := range a.Usage() {
		perPool[u.Pool] += u.Used

		if u.Used < 0 || u.Free.Sign() < 0 {
			t.Fatalf("pool %s %s: used %d of %s", u.Pool, u.Family, u.Used, u.Total)
		}
	}

	for name, n := range perPool {
		if int64(len(inPool[name])) != n {
			t.Fatalf("pool %s counts %d used, %d are held", name, n, len(inPool[name]))
		}
	}
}

func collide(a, b []ipam.Port) bool {
	for _, p := range a {
		if slices.Contains(b, p) {
			return true
		}
	}

	return false
}
