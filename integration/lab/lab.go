// Package lab builds throw-away labs of Linux network namespaces for integration tests and
// the demo: N node namespaces, an optional router and an optional client, all on one L2
// segment (a bridge in a "switch" namespace), with IPv4 10.77.0.0/24 and IPv6 fd77::/64.
//
// A Lab owns, and Close removes:
//   - every named network namespace whose name starts with Lab.Prefix (in /run/netns),
//     together with the bridge and veths inside them;
//   - every process started through Host.Start or Lab.StartBIRD, plus any other process
//     still found inside one of its namespaces at teardown (it would keep the namespace
//     alive after its name is gone);
//   - Lab.Dir (configs, sockets, logs), unless Options.KeepDir is set.
//
// The topology is built with netlink; no link or address ever appears in the root network
// namespace. The only change outside the lab's own namespaces is what `ip netns add` also
// does: /run/netns is made a shared mount point, so that deleting a namespace name also
// releases the copies held by processes started with `ip netns exec`.
//
// Everything needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Addressing of the lab segment. Fixed rather than configurable: every lab lives on its own
// bridge in its own namespaces, so labs never see each other's addresses.
var (
	Prefix4 = netip.MustParsePrefix("10.77.0.0/24")
	Prefix6 = netip.MustParsePrefix("fd77::/64")
)

const (
	// MaxNodes keeps node addresses (.10+i) below the client's .254.
	MaxNodes = 200

	bridgeName = "br0"
	hostIface  = "eth0"
	netnsDir   = "/run/netns"
)

// Options selects what New builds.
type Options struct {
	// Nodes is the number of node namespaces (node-1 .. node-N).
	Nodes int
	// Router adds a router namespace (.1 / ::1); nodes and client route through it.
	Router bool
	// Client adds a client namespace (.254 / ::fe).
	Client bool
	// IPv6 adds fd77::/64 addresses and IPv6 default routes.
	IPv6 bool
	// KeepDir leaves Lab.Dir (logs, configs) in place after Close, for post-mortems.
	KeepDir bool
}

// Host is one namespace of the lab with one interface, eth0, on the shared segment.
type Host struct {
	// Name is the short name: "node-1", "router", "client" or "switch".
	Name string
	// NS is the full network namespace name, usable with `ip netns exec`.
	NS string
	// IPv4 and IPv6 are eth0's addresses; invalid for the switch, and IPv6 is invalid
	// unless Options.IPv6.
	IPv4, IPv6 netip.Addr
	// MAC is eth0's hardware address (the bridge's for the switch).
	MAC net.HardwareAddr
	// SwitchPort is the name of this host's bridge port in the switch namespace.
	SwitchPort string

	lab *Lab
	ns  netns.NsHandle
	nl  *netlink.Handle
}

// Lab is a running lab. Create it with New or NewForTest, release it with Close.
type Lab struct {
	// Prefix starts every namespace name of this lab ("tlb" + 5 hex digits + "-").
	Prefix string
	// Dir holds configs, control sockets and process logs.
	Dir string

	// Switch holds the bridge; it has no addresses. Run tcpdump -i br0 here to see it all.
	Switch *Host
	Nodes  []*Host
	Router *Host // nil unless Options.Router
	Client *Host // nil unless Options.Client

	opts Options

	mu      sync.Mutex
	closed  bool
	names   []string // every namespace name New tried to create, for cleanup
	hosts   []*Host  // every namespace that exists, switch first
	procs   []*Proc
	logSeq  map[string]int
	birdSeq int

	closeOnce sync.Once
	closeErr  error
}

// testHookAfterNS, when set, runs after each namespace is created; tests use it to make
// New fail half-way.
var testHookAfterNS func(name string) error

// New builds a lab. On error everything built so far is torn down again. ctx bounds the
// build only; processes started later take their own context.
func New(ctx context.Context, opts Options) (_ *Lab, err error) {
	if opts.Nodes < 0 || opts.Nodes > MaxNodes {
		return nil, fmt.Errorf("lab: Nodes = %d, want 0..%d", opts.Nodes, MaxNodes)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: network namespaces need root")
	}
	if opts.IPv6 && !ipv6Supported() {
		return nil, errors.New("lab: IPv6 requested but the kernel has no IPv6 (/proc/sys/net/ipv6 missing)")
	}
	prefix, err := newPrefix()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", prefix+"*")
	if err != nil {
		return nil, fmt.Errorf("lab: create work dir: %w", err)
	}
	// Daemons that drop privileges (e.g. FRR) must still read their configs here.
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("lab: chmod work dir: %w", err)
	}
	l := &Lab{Prefix: prefix, Dir: dir, opts: opts, logSeq: map[string]int{}}
	defer func() {
		if err != nil {
			if cerr := l.Teardown(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("lab: cleanup after failed New: %w", cerr))
			}
		}
	}()
	if err := l.build(ctx); err != nil {
		return nil, fmt.Errorf("lab %s: %w", prefix, err)
	}
	return l, nil
}

func newPrefix() (string, error) {
	for range 10 {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("lab: random prefix: %w", err)
		}
		p := "tlb" + hex.EncodeToString(b[:])[:5] + "-"
		// NewNamed's O_EXCL catches a clash on a single name; checking the whole prefix
		// keeps two labs from ever mixing namespaces.
		m, err := filepath.Glob(filepath.Join(netnsDir, p+"*"))
		if err != nil {
			return "", fmt.Errorf("lab: glob %s: %w", netnsDir, err)
		}
		if len(m) == 0 {
			return p, nil
		}
	}
	return "", errors.New("lab: no free namespace prefix after 10 tries")
}

func (l *Lab) build(ctx context.Context) error {
	if err := prepareNetnsDir(); err != nil {
		return err
	}

	// Namespaces first, so a failure anywhere later finds them all in l.hosts for cleanup.
	var err error
	if l.Switch, err = l.addNS("switch"); err != nil {
		return err
	}
	var hosts []*Host
	for i := 1; i <= l.opts.Nodes; i++ {
		h, err := l.addNS(fmt.Sprintf("node-%d", i))
		if err != nil {
			return err
		}
		h.IPv4, h.IPv6 = hostAddrs(byte(10+i), uint16(0x10+i))
		l.Nodes = append(l.Nodes, h)
		hosts = append(hosts, h)
	}
	if l.opts.Router {
		if l.Router, err = l.addNS("router"); err != nil {
			return err
		}
		l.Router.IPv4, l.Router.IPv6 = hostAddrs(1, 1)
		hosts = append(hosts, l.Router)
	}
	if l.opts.Client {
		if l.Client, err = l.addNS("client"); err != nil {
			return err
		}
		l.Client.IPv4, l.Client.IPv6 = hostAddrs(254, 0xfe)
		hosts = append(hosts, l.Client)
	}
	if !l.opts.IPv6 {
		for _, h := range hosts {
			h.IPv6 = netip.Addr{}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	if err := l.buildSwitch(); err != nil {
		return err
	}
	for _, h := range hosts {
		if err := l.plug(h); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Sysctls after the veths exist, because some are per-interface (eth0).
	for _, h := range l.hosts {
		if err := h.writeSysctls(l.sysctlsFor(h)); err != nil {
			return err
		}
	}
	for _, h := range hosts {
		if err := l.configure(h); err != nil {
			return err
		}
	}
	return l.waitPathsReady(ctx, hosts)
}

// hostAddrs maps a host's slot to its addresses: 10.77.0.<v4> and fd77::<v6>.
func hostAddrs(v4 byte, v6 uint16) (netip.Addr, netip.Addr) {
	a4 := Prefix4.Addr().As4()
	a4[3] = v4
	a6 := Prefix6.Addr().As16()
	a6[14], a6[15] = byte(v6>>8), byte(v6)
	return netip.AddrFrom4(a4), netip.AddrFrom16(a6)
}

// prepareNetnsDir does what `ip netns add` does before its first bind mount: make
// /run/netns a shared mount point. Processes started with `ip netns exec` live in a copy of
// the mount table; without propagation their copy of every lab's namespace mounts would
// keep those namespaces alive after DeleteNamed.
func prepareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	// EINVAL: not a mount point yet.
	if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s onto itself: %w", netnsDir, err)
	}
	if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}

// addNS creates the named namespace <prefix><short> and a netlink handle inside it.
func (l *Lab) addNS(short string) (*Host, error) {
	name := l.Prefix + short
	l.names = append(l.names, name) // before creating: a half-made name must be removed too
	ns, err := newNamedNS(name)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	h := &Host{Name: short, NS: name, lab: l, ns: ns}
	l.hosts = append(l.hosts, h)
	h.nl, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	if testHookAfterNS != nil {
		if err := testHookAfterNS(name); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// newNamedNS wraps netns.NewNamed, which moves the calling thread into the new namespace:
// it runs on a locked thread that is put back before it is released.
func newNamedNS(name string) (netns.NsHandle, error) {
	var ns netns.NsHandle
	err := onLockedThread(func() error {
		var err error
		ns, err = netns.NewNamed(name)
		return err
	})
	return ns, err
}

// onLockedThread runs fn on a fresh locked OS thread and puts the thread back into its
// original network namespace afterwards. If that fails the thread stays locked, so the Go
// runtime discards it when the goroutine exits instead of reusing a thread in a foreign
// namespace.
func onLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("restore netns (thread discarded): %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// inNS runs fn on a locked thread that has entered ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	return onLockedThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return fn()
	})
}

func (l *Lab) buildSwitch() error {
	sw := l.Switch
	if err := sw.Do(func() error { return createBridge(bridgeName, net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0}) }); err != nil {
		return fmt.Errorf("switch: create bridge %s: %w", bridgeName, err)
	}
	br, err := sw.nl.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("switch: find bridge: %w", err)
	}
	for _, name := range []string{"lo", bridgeName} {
		if err := setUpByName(sw.nl, name); err != nil {
			return fmt.Errorf("switch: %w", err)
		}
	}
	sw.MAC = br.Attrs().HardwareAddr
	return nil
}

// plug creates h's veth pair from the switch's netlink socket with both ends placed
// explicitly, eth0 in h and the port in the switch, so neither end passes through the
// root namespace.
func (l *Lab) plug(h *Host) error {
	sw := l.Switch
	h.SwitchPort = "p-" + stripDash(h.Name)
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:      hostIface,
			Namespace: netlink.NsFd(h.ns),
			// Readable in tcpdump: 02:77:00:00:00:<last IPv4 octet>.
			HardwareAddr: net.HardwareAddr{0x02, 0x77, 0, 0, 0, h.IPv4.As4()[3]},
		},
		PeerName:      h.SwitchPort,
		PeerNamespace: netlink.NsFd(sw.ns),
	}
	if err := sw.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("%s: add veth %s <-> switch/%s: %w", h.Name, hostIface, h.SwitchPort, err)
	}
	port, err := sw.nl.LinkByName(h.SwitchPort)
	if err != nil {
		return fmt.Errorf("%s: find switch port %s: %w", h.Name, h.SwitchPort, err)
	}
	br, err := sw.nl.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("%s: find bridge: %w", h.Name, err)
	}
	if err := sw.nl.LinkSetMaster(port, br); err != nil {
		return fmt.Errorf("%s: enslave %s to %s: %w", h.Name, h.SwitchPort, bridgeName, err)
	}
	if err := sw.nl.LinkSetUp(port); err != nil {
		return fmt.Errorf("%s: set %s up: %w", h.Name, h.SwitchPort, err)
	}
	return nil
}

func stripDash(s string) string {
	b := []byte(s)
	return string(slices.DeleteFunc(b, func(c byte) bool { return c == '-' }))
}

// configure brings h's links up and adds addresses and routes. Links go up before
// addresses so the prefix routes exist when the default routes need their gateway.
func (l *Lab) configure(h *Host) error {
	for _, name := range []string{"lo", hostIface} {
		if err := setUpByName(h.nl, name); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	eth, err := h.nl.LinkByName(hostIface)
	if err != nil {
		return fmt.Errorf("%s: find %s: %w", h.Name, hostIface, err)
	}
	h.MAC = eth.Attrs().HardwareAddr

	addrs := []*netlink.Addr{{IPNet: ipNet(h.IPv4, Prefix4.Bits())}}
	if h.IPv6.IsValid() {
		// NODAD: a tentative address cannot be bound or used as a source for ~1 s.
		addrs = append(addrs, &netlink.Addr{IPNet: ipNet(h.IPv6, Prefix6.Bits()), Flags: unix.IFA_F_NODAD})
	}
	for _, a := range addrs {
		if err := h.nl.AddrAdd(eth, a); err != nil {
			return fmt.Errorf("%s: add address %s: %w", h.Name, a.IPNet, err)
		}
	}

	if l.Router == nil || h == l.Router {
		return nil
	}
	gws := []netip.Addr{l.Router.IPv4}
	if h.IPv6.IsValid() {
		gws = append(gws, l.Router.IPv6)
	}
	for _, gw := range gws {
		dst := ipNet(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			dst = ipNet(netip.IPv6Unspecified(), 0)
		}
		r := &netlink.Route{LinkIndex: eth.Attrs().Index, Dst: dst, Gw: net.IP(gw.AsSlice())}
		if err := h.nl.RouteAdd(r); err != nil {
			return fmt.Errorf("%s: add default route via %s: %w", h.Name, gw, err)
		}
	}
	return nil
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, a.BitLen())}
}

func setUpByName(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// Hosts returns every host namespace (nodes, router, client), not the switch.
func (l *Lab) Hosts() []*Host {
	hs := slices.Clone(l.Nodes)
	if l.Router != nil {
		hs = append(hs, l.Router)
	}
	if l.Client != nil {
		hs = append(hs, l.Client)
	}
	return hs
}

// SetPortUp sets h's port on the switch up or down. Down is a cable cut: h keeps its
// addresses and routes (unlike `link set eth0 down` inside h) but loses carrier. Up
// returns once frames pass again.
func (l *Lab) SetPortUp(h *Host, up bool) error {
	if err := l.checkOpen(); err != nil {
		return err
	}
	if h == nil || h.SwitchPort == "" {
		return errors.New("lab: SetPortUp: host has no switch port")
	}
	sw := l.Switch
	port, err := sw.nl.LinkByName(h.SwitchPort)
	if err != nil {
		return fmt.Errorf("lab: find switch port %s: %w", h.SwitchPort, err)
	}
	if up {
		err = sw.nl.LinkSetUp(port)
	} else {
		err = sw.nl.LinkSetDown(port)
	}
	if err != nil {
		return fmt.Errorf("lab: set switch port %s up=%v: %w", h.SwitchPort, up, err)
	}
	if up {
		if err := l.waitPathsReady(context.Background(), []*Host{h}); err != nil {
			return fmt.Errorf("lab: switch port %s back up: %w", h.SwitchPort, err)
		}
	}
	return nil
}

// RouterRoutes lists the router's main-table routes of family (netlink.FAMILY_V4 or
// netlink.FAMILY_V6), including multipath next hops in Route.MultiPath.
func (l *Lab) RouterRoutes(family int) ([]netlink.Route, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	if l.Router == nil {
		return nil, errors.New("lab: RouterRoutes: lab has no router")
	}
	rs, err := l.Router.nl.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("lab: list router routes (family %d): %w", family, err)
	}
	return rs, nil
}

func (l *Lab) checkOpen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab: closed")
	}
	return nil
}

// Close tears the lab down; see Teardown. It has no result so that it fits t.Cleanup.
func (l *Lab) Close() { _ = l.Teardown() }

// Teardown stops every process of the lab (SIGTERM, then SIGKILL after StopTimeout), kills
// whatever else still runs inside its namespaces, deletes the namespaces and removes Dir.
// It is safe to call more than once (later calls return the first result) and on a lab
// that New only half built.
func (l *Lab) Teardown() error {
	l.closeOnce.Do(func() { l.closeErr = l.teardown() })
	return l.closeErr
}

func (l *Lab) teardown() error {
	l.mu.Lock()
	l.closed = true
	procs := slices.Clone(l.procs)
	l.mu.Unlock()

	var errs []error
	// In parallel: each may take StopTimeout, and they do not depend on each other.
	var wg sync.WaitGroup
	perr := make([]error, len(procs))
	for i, p := range procs {
		wg.Go(func() { perr[i] = p.Stop() })
	}
	wg.Wait()
	errs = append(errs, perr...)

	if err := l.killStrays(); err != nil {
		errs = append(errs, err)
	}
	for _, h := range l.hosts {
		if h.nl != nil {
			h.nl.Close()
		}
		if h.ns.IsOpen() {
			_ = h.ns.Close()
		}
	}
	for _, name := range slices.Backward(l.names) {
		if err := deleteNamed(name); err != nil {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", name, err))
		}
	}
	if !l.opts.KeepDir {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", l.Dir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab %s teardown: %w", l.Prefix, err)
	}
	return nil
}

// deleteNamed also copes with names New created but never mounted.
func deleteNamed(name string) error {
	p := filepath.Join(netnsDir, name)
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	err := netns.DeleteNamed(name)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if errors.Is(err, unix.EINVAL) { // not a mount point
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return rerr
		}
		return nil
	}
	return err
}
