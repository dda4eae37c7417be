package ipam_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// newAllocator returns an allocator over pools, failing the test on a bad one.
func newAllocator(t testing.TB, pools ...ipam.Pool) *ipam.Allocator {
	t.Helper()

	a := ipam.New()
	if err := a.SetPools(pools); err != nil {
		t.Fatal(err)
	}

	return a
}

// auto is an auto-assign pool.
func auto(name string, addrs ...string) ipam.Pool {
	return ipam.Pool{Name: name, Addresses: addrs, AutoAssign: true}
}

func svc(key string) ipam.ServiceKey {
	ns, name, _ := strings.Cut(key, "/")

	return ipam.ServiceKey{Namespace: ns, Name: name}
}

// v4 is an IPv4 single-stack request with no wishes.
func v4(key string) ipam.Request {
	return ipam.Request{Service: svc(key), Families: []ipam.Family{ipam.IPv4}}
}

func ips(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}

	return out
}

func tcp(ports ...uint16) []ipam.Port {
	out := make([]ipam.Port, len(ports))
	for i, p := range ports {
		out[i] = ipam.Port{Protocol: "TCP", Port: p}
	}

	return out
}

// ipStrings renders an allocation's IPs for comparison.
func ipStrings(al ipam.Allocation) string {
	s := make([]string, len(al.IPs))
	for i, ip := range al.IPs {
		s[i] = ip.String()
	}

	return strings.Join(s, ",")
}

// contains says whether err's message contains s.
func contains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}
