// Package bgpcheck observes BGP-announced VIPs in the netns lab from the
// router's side: the kernel route BIRD installs and its next hops. The netns
// tests and `make bench-bgp` share it.
package bgpcheck

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
)

// Lab VIPs announced over BGP: outside the lab's subnets, so only routes lead there.
var (
	VIP4 = netip.MustParsePrefix("10.99.0.100/32")
	VIP6 = netip.MustParsePrefix("fd99::100/128")
)

// NodeASN is the nodes' AS; the router is lab.RouterAS.
const NodeASN = 64513

// Options shape the nodes' BGP config.
type Options struct {
	// Password, when set, is written to a file the peers' passwordFile points at.
	PasswordFile string
	// BFD turns on 100 ms × 3 BFD toward the router.
	BFD bool
	// IPv6 adds a session to the router's IPv6 address and the IPv6 VIP.
	IPv6 bool
	// IBGP puts the nodes in the router's AS.
	IBGP bool
	// LocalPref is announced with the VIP (iBGP only).
	LocalPref uint32
}

// Config is a control-plane node's agent config for a BGP-mode VIP.
func Config(opts Options) string {
	var b strings.Builder

	fmt.Fprintf(&b, `healthChecks:
  - name: apiserver
    kind: https
    address: 127.0.0.1:%d
    insecureSkipVerify: true
    interval: 200ms
bgp:
  asn: %d
  peers:
`, standin.APIPort, NodeASN)

	peerASN := lab.RouterAS
	if opts.IBGP {
		peerASN = NodeASN
	}

	peers := []string{"router:10.77.0.1"}
	if opts.IPv6 {
		peers = append(peers, "router6:fd77::1")
	}

	for _, p := range peers {
		name, addr, _ := strings.Cut(p, ":")
		fmt.Fprintf(&b, "    - name: %s\n      address: \"%s\"\n      asn: %d\n      holdTime: 3s\n      keepalive: 1s\n", name, addr, peerASN)

		if opts.BFD {
			b.WriteString("      bfd: {minTx: 100ms, minRx: 100ms, multiplier: 3}\n")
		}

		if opts.PasswordFile != "" {
			fmt.Fprintf(&b, "      passwordFile: %s\n", opts.PasswordFile)
		}
	}

	addrs := []string{VIP4.Addr().String()}
	if opts.IPv6 {
		addrs = append(addrs, `"`+VIP6.Addr().String()+`"`)
	}

	fmt.Fprintf(&b, `vip:
  mode: bgp
  addresses: [%s]
  healthCheck: apiserver
  communities: ["65000:100", "no-export"]
  largeCommunities: ["64513:1:2"]
  localPref: %d
`, strings.Join(addrs, ", "), opts.LocalPref)

	return b.String()
}

// NextHops lists the router's kernel next hops toward prefix (none when it has no route).
func NextHops(l *lab.Lab, prefix netip.Prefix) ([]netip.Addr, error) {
	family := netlink.FAMILY_V4
	if prefix.Addr().Is6() {
		family = netlink.FAMILY_V6
	}

	routes, err := l.RouterRoutes(family)
	if err != nil {
		return nil, err
	}

	var hops []netip.Addr

	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() != prefix.String() {
			continue
		}

		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			hops = append(hops, gw.Unmap())
		}

		for _, nh := range r.MultiPath {
			if gw, ok := netip.AddrFromSlice(nh.Gw); ok {
				hops = append(hops, gw.Unmap())
			}
		}
	}

	slices.SortFunc(hops, netip.Addr.Compare)

	return hops, nil
}

// WaitNextHops waits until the router's route toward prefix has n next hops,
// and says when it saw that.
func WaitNextHops(l *lab.Lab, prefix netip.Prefix, n int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)

	var (
		last []netip.Addr
		err  error
	)

	for time.Now().Before(deadline) {
		last, err = NextHops(l, prefix)
		if err == nil && len(last) == n {
			return time.Now(), nil
		}

		time.Sleep(5 * time.Millisecond)
	}

	return time.Time{}, fmt.Errorf("router route %s: want %d next hops within %s, last %v (%v)", prefix, n, timeout, last, err)
}
