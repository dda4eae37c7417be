package ipam_test

import (
	"errors"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

func TestPoolAddresses(t *testing.T) {
	for _, tc := range []struct {
		addrs []string
		avoid bool
		want  map[ipam.Family]string // total per family
	}{
		{[]string{"10.0.0.0/24"}, false, map[ipam.Family]string{ipam.IPv4: "256"}},
		{[]string{"10.0.0.0/24"}, true, map[ipam.Family]string{ipam.IPv4: "254"}},
		{[]string{"10.0.0.250-10.0.1.5"}, true, map[ipam.Family]string{ipam.IPv4: "10"}},
		{[]string{"10.0.0.7/24"}, false, map[ipam.Family]string{ipam.IPv4: "256"}},
		{[]string{"::ffff:10.0.0.0/120"}, false, map[ipam.Family]string{ipam.IPv4: "256"}},
		{[]string{" 10.0.0.1 - 10.0.0.1 ", "fd00::/64"}, true, map[ipam.Family]string{ipam.IPv4: "1", ipam.IPv6: "18446744073709551616"}},
		{[]string{"::/0"}, false, map[ipam.Family]string{ipam.IPv6: "340282366920938463463374607431768211456"}},
	} {
		a := newAllocator(t, ipam.Pool{Name: "p", Addresses: tc.addrs, AvoidBuggyIPs: tc.avoid})
		got := map[ipam.Family]string{}
		for _, u := range a.Usage() {
			got[u.Family] = u.Total.String()
		}

		if len(got) != len(tc.want) || got[ipam.IPv4] != tc.want[ipam.IPv4] || got[ipam.IPv6] != tc.want[ipam.IPv6] {
			t.Errorf("%v avoid=%v: totals %v, want %v", tc.addrs, tc.avoid, got, tc.want)
		}
	}
}

func TestPoolConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pools []ipam.Pool
		want  string
	}{
		{"no name", []ipam.Pool{{Addresses: []string{"10.0.0.0/24"}}}, "a pool has no name"},
		{"no addresses", []ipam.Pool{{Name: "a"}}, `pool "a" has no addresses`},
		{"garbage", []ipam.Pool{auto("a", "10.0.0.x/24")}, `pool "a": address "10.0.0.x/24"`},
		{"mixed range", []ipam.Pool{auto("a", "10.0.0.1-fd00::1")}, "different families"},
		{"backwards", []ipam.Pool{auto("a", "10.0.0.9-10.0.0.1")}, "10.0.0.9 comes after 10.0.0.1"},
		{"zone", []ipam.Pool{auto("a", "fe80::1%eth0-fe80::2%eth0")}, "zone"},
		{"twice", []ipam.Pool{auto("a", "10.0.0.0/24"), auto("a", "10.0.1.0/24")}, `pool "a" defined twice`},
		{"overlap", []ipam.Pool{auto("a", "10.0.0.0/24"), auto("b", "10.0.0.200-10.0.1.5")}, `10.0.0.200-10.0.1.5 of pool "b" overlaps 10.0.0.0-10.0.0.255 of pool "a"`},
		{"self overlap", []ipam.Pool{auto("a", "fd00::/120", "fd00::10/128")}, `overlaps`},
	} {
		err := ipam.New().SetPools(tc.pools)
		if !errors.Is(err, ipam.ErrPoolConfig) || !contains(err, tc.want) {
			t.Errorf("%s: %v, want ErrPoolConfig with %q", tc.name, err, tc.want)
		}
	}
}
