package ipam_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// The Allocator is documented as safe for concurrent use; under -race this
// proves it, and the IP count proves no two writers took the same address.
func TestConcurrentUse(t *testing.T) {
	a := newAllocator(t, auto("a", "10.0.0.0/22", "fd00::/118"))

	const workers, each = 8, 100

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r := ipam.Request{Service: svc(fmt.Sprintf("w%d/s%d", w, i)), Families: []ipam.Family{ipam.IPv4, ipam.IPv6}, Policy: ipam.RequireDualStack}
				if _, err := a.Allocate(r); err != nil {
					t.Error(err)
				}

				if i%3 == 0 {
					a.Release(r.Service)
				}

				a.Usage()
				a.Outside()
			}
		})
	}

	wg.Wait()

	seen := map[string]string{}
	for _, al := range a.Allocations() {
		for _, ip := range al.IPs {
			if other, dup := seen[ip.String()]; dup {
				t.Errorf("%s held by %s and %s", ip, other, al.Service)
			}

			seen[ip.String()] = al.Service.String()
		}
	}

	if want := 2 * workers * (each - (each+2)/3); len(seen) != want {
		t.Errorf("%d IPs held, want %d", len(seen), want)
	}
}
