package member

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestChooseAdvertise(t *testing.T) {
	ip := netip.MustParseAddr
	noRoute := func(int) (netip.Addr, error) { return netip.Addr{}, errors.New("network unreachable") }
	routes := func(v4, v6 string) func(int) (netip.Addr, error) {
		return func(family int) (netip.Addr, error) {
			a := map[int]string{4: v4, 6: v6}[family]
			if a == "" {
				return netip.Addr{}, errors.New("network unreachable")
			}

			return ip(a), nil
		}
	}
	// Sorted as NetlinkAddresses lists them: a VIP (/32), the node's addresses.
	nodeAddrs := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.2/24"), netip.MustParsePrefix("10.0.0.100/32"),
		netip.MustParsePrefix("fd00::2/64"),
	}

	for _, tc := range []struct {
		name     string
		in       AdvertiseInputs
		want     string
		wantHow  string
		wantFail bool
	}{
		{"a specific listen address", AdvertiseInputs{Listen: ip("10.0.0.5"), Pushed: ip("10.0.0.2")}, "10.0.0.5", "listen address", false},
		{"the pushed address", AdvertiseInputs{Listen: ip("::"), Pushed: ip("10.0.0.2"), Route: routes("192.0.2.2", ""), Addresses: nodeAddrs}, "10.0.0.2", "address pushed for this node", false},
		{"the default route's source", AdvertiseInputs{Listen: ip("::"), Route: routes("192.0.2.2", "fd00::2"), Addresses: nodeAddrs}, "192.0.2.2", "source address of the default route", false},
		{"an IPv6-only default route", AdvertiseInputs{Listen: ip("::"), Route: routes("", "fd00::2")}, "fd00::2", "source address of the default route", false},
		{"no route: the first address on a subnet", AdvertiseInputs{Listen: ip("::"), Route: noRoute, Addresses: nodeAddrs[1:]}, "fd00::2", "first address on a subnet", false},
		{"listen on 0.0.0.0: IPv4 only", AdvertiseInputs{Listen: ip("0.0.0.0"), Pushed: ip("fd00::2"), Route: routes("", "fd00::2"), Addresses: nodeAddrs}, "10.0.0.2", "first address on a subnet", false},
		{"nothing", AdvertiseInputs{Listen: ip("::"), Route: noRoute, Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.100/32")}}, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, how, err := ChooseAdvertise(tc.in)
			if tc.wantFail {
				require.ErrorContains(t, err, "set members.advertise")

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.want, got.String())
			assert.Equal(t, tc.wantHow, how)
		})
	}
}
