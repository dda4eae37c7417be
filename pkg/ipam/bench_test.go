package ipam_test

import (
	"fmt"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// BenchmarkAllocate10k allocates 10,000 dual-stack services over a /16 and a
// /112; one op is the whole 10k.
func BenchmarkAllocate10k(b *testing.B) {
	const services = 10_000

	reqs := make([]ipam.Request, services)
	for i := range reqs {
		reqs[i] = ipam.Request{
			Service:  ipam.ServiceKey{Namespace: "bench", Name: fmt.Sprint(i)},
			Families: []ipam.Family{ipam.IPv4, ipam.IPv6},
			Policy:   ipam.RequireDualStack,
			Ports:    tcp(80, 443),
		}
	}

	b.ReportAllocs()

	for b.Loop() {
		a := newAllocator(b, auto("bench", "10.0.0.0/16", "fd00::/112"))
		for _, r := range reqs {
			if _, err := a.Allocate(r); err != nil {
				b.Fatal(err)
			}
		}
	}

	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*services), "ns/service")
}
