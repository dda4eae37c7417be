// Package vm_test is the VM tier: it runs inside a QEMU guest booted by hack/vm/run.sh
// (Debian's kernel, with IPVS, nftables, dummy and veth) as PID 1's only job, and drives the
// real IPVS controller and its kernel and nftables implementations against that kernel.
//
// Everything here changes the guest's network stack freely: the guest is a throw-away VM
// that exists for these tests. Outside the VM (no TALOS_LB_VM=1, set by the guest's init)
// every test skips.
package vm_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/talos-lb/talos-lb/pkg/netutil"
)

// The guest's addressing: the root namespace is the VIP holder; the client and every
// backend live in namespaces of their own, each joined to the holder by a veth with an
// IPv4 /24 and an IPv6 /64 (the holder's end .1 / ::1, the namespace's .2 / ::2).
var (
	vip  = netip.MustParseAddr("10.96.0.1")
	vip6 = netip.MustParseAddr("fd96::1")
)

const (
	vipPort     = 443
	backendPort = 8080
)

// requireVM skips the test outside the guest of hack/vm/run.sh.
func requireVM(t *testing.T) {
	t.Helper()

	if os.Getenv("TALOS_LB_VM") != "1" {
		t.Skip("runs inside the QEMU guest only: make test-vm")
	}
}

var loadIPVS = sync.OnceValue(func() error {
	dir := os.Getenv("TALOS_LB_VM_MODULES")

	order, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		return fmt.Errorf("reading module order: %w", err)
	}

	for _, name := range strings.Fields(string(order)) {
		if !strings.HasPrefix(name, "ip_vs") {
			continue // the guest's init loaded it
		}

		if err := insmod(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("loading %s: %w", name, err)
		}
	}

	return nil
})

// requireIPVS loads the ip_vs modules, which the guest's init leaves out so one test can see
// the agent start without them.
func requireIPVS(t *testing.T) {
	t.Helper()

	if err := loadIPVS(); err != nil {
		t.Fatal(err)
	}
}

func ipvsLoaded() bool {
	_, err := os.Stat("/sys/module/ip_vs")

	return err == nil
}

func insmod(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close() //nolint:errcheck

	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return err
	}

	return nil
}

// onFreshThread runs fn on a new locked OS thread that is thrown away afterwards (the
// goroutine exits still locked), so a thread left in another namespace never runs other code.
func onFreshThread(fn func() error) error {
	errc := make(chan error, 1)

	go func() {
		runtime.LockOSThread()

		errc <- fn()
	}()

	return <-errc
}

func inNS(ns netns.NsHandle, fn func() error) error {
	return onFreshThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("entering namespace: %w", err)
		}

		return fn()
	})
}

// peer is a network namespace joined to the root namespace by a veth: eth0 inside, host
// outside.
type peer struct {
	ns          netns.NsHandle
	host        string
	addr, addr6 netip.Addr // eth0's addresses
	gw, gw6     netip.Addr // the host end's addresses
}

// newPeer creates a namespace and its veth, addresses both ends from the two prefixes and,
// when route is set, adds default routes through the host.
func newPeer(t *testing.T, host string, prefix, prefix6 netip.Prefix, route bool) *peer {
	t.Helper()

	p := &peer{host: host}
	p.gw, p.addr = prefix.Addr().Next(), prefix.Addr().Next().Next()
	p.gw6, p.addr6 = prefix6.Addr().Next(), prefix6.Addr().Next().Next()

	if err := onFreshThread(func() error {
		var err error
		p.ns, err = netns.New()

		return err
	}); err != nil {
		t.Fatalf("creating namespace for %s: %v", host, err)
	}

	root := rootHandle(t)

	t.Cleanup(func() {
		if l, err := root.LinkByName(host); err == nil {
			_ = root.LinkDel(l) //nolint:errcheck // the namespace's end goes with it
		}

		p.ns.Close() //nolint:errcheck
	})

	if err := root.LinkAdd(&netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: host},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(p.ns),
	}); err != nil {
		t.Fatalf("adding veth %s: %v", host, err)
	}

	inside, err := netlink.NewHandleAt(p.ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer inside.Close()

	up(t, root, host, netip.PrefixFrom(p.gw, 24), netip.PrefixFrom(p.gw6, 64))
	up(t, inside, "lo")
	up(t, inside, "eth0", netip.PrefixFrom(p.addr, 24), netip.PrefixFrom(p.addr6, 64))

	if route {
		for _, gw := range []netip.Addr{p.gw, p.gw6} {
			if err := inside.RouteAdd(&netlink.Route{Gw: gw.AsSlice()}); err != nil {
				t.Fatalf("default route of %s via %s: %v", host, gw, err)
			}
		}
	}

	return p
}

func rootHandle(t *testing.T) *netlink.Handle {
	t.Helper()

	h, err := netutil.NewHandle()
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(h.Close)

	return h
}

// up sets a link up with the given addresses; IPv6 ones skip duplicate address detection,
// so they are usable at once.
func up(t *testing.T, h *netlink.Handle, name string, addrs ...netip.Prefix) {
	t.Helper()

	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("finding %s: %v", name, err)
	}

	for _, a := range addrs {
		ipnet := &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipnet, Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatalf("adding %s to %s: %v", a, name, err)
		}
	}

	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("setting %s up: %v", name, err)
	}
}

// addVIP puts the VIP on a dummy link of the root namespace, as the VIP holder would.
func addVIP(t *testing.T) {
	t.Helper()

	root := rootHandle(t)
	if err := root.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "vip0"}}); err != nil {
		t.Fatalf("adding dummy vip0: %v", err)
	}

	t.Cleanup(func() {
		if l, err := root.LinkByName("vip0"); err == nil {
			_ = root.LinkDel(l) //nolint:errcheck
		}
	})

	up(t, root, "vip0", netip.PrefixFrom(vip, 32), netip.PrefixFrom(vip6, 128))
}

// backend is a TCP server in its own namespace, on both families: it greets every
// connection with its name and the source address it sees, then echoes. It has no route
// beyond its own link, so it can only answer the holder.
type backend struct {
	*peer

	name string
	hits atomic.Int64
}

// address is the backend's address in vip's family.
func (b *backend) address(vip netip.Addr) netip.Addr {
	if vip.Is6() {
		return b.addr6
	}

	return b.addr
}

// holder is the holder's address on the backend's link in vip's family: what the backend
// sees as the source of masqueraded connections.
func (b *backend) holder(vip netip.Addr) netip.Addr {
	if vip.Is6() {
		return b.gw6
	}

	return b.gw
}

func newBackend(t *testing.T, i int) *backend {
	t.Helper()

	b := &backend{name: fmt.Sprintf("backend-%d", i)}
	b.peer = newPeer(t, fmt.Sprintf("tb%d", i),
		netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 20, byte(i), 0}), 24),
		netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x20, 0, byte(i)}), 64), false)

	var ln net.Listener

	if err := inNS(b.ns, func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", backendPort))

		return err
	}); err != nil {
		t.Fatalf("%s: listening: %v", b.name, err)
	}

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)

	// Connections are closed here too: a client's close may never arrive once the
	// IPVS service that carried it is gone.
	t.Cleanup(func() {
		ln.Close() //nolint:errcheck

		mu.Lock()
		for c := range conns {
			c.Close() //nolint:errcheck
		}
		mu.Unlock()

		wg.Wait()
	})

	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}

			b.hits.Add(1)

			mu.Lock()
			conns[c] = true
			mu.Unlock()

			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()

					c.Close() //nolint:errcheck
				}()

				remote := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap() //nolint:forcetypeassert // a TCP listener
				if _, err := fmt.Fprintf(c, "%s %s\n", b.name, remote); err != nil {
					return
				}

				io.Copy(c, c) //nolint:errcheck // echo until the client closes
			})
		}
	})

	return b
}

// client is the namespace connections to the VIP come from.
type client struct {
	*peer
}

func newClient(t *testing.T) *client {
	t.Helper()

	return &client{newPeer(t, "tc", netip.MustParsePrefix("10.10.0.0/24"), netip.MustParsePrefix("fd10::/64"), true)}
}

// conn is one client connection to the VIP and the greeting its backend sent.
type conn struct {
	net.Conn

	r       *bufio.Reader
	backend string
	// source is the address the backend saw the connection come from.
	source string
}

// dial connects to the VIP from the client namespace and reads the backend's greeting.
func (c *client) dial(ctx context.Context, vip netip.Addr) (*conn, error) {
	var nc net.Conn

	if err := inNS(c.ns, func() error {
		d := net.Dialer{Timeout: 2 * time.Second}

		var err error
		nc, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(vip, vipPort).String())

		return err
	}); err != nil {
		return nil, err
	}

	out := &conn{Conn: nc, r: bufio.NewReader(nc)}

	if err := nc.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return nil, err
	}

	line, err := out.r.ReadString('\n')
	if err != nil {
		nc.Close() //nolint:errcheck

		return nil, fmt.Errorf("reading greeting: %w", err)
	}

	fields := strings.Fields(line)
	if len(fields) != 2 {
		nc.Close() //nolint:errcheck

		return nil, fmt.Errorf("greeting %q", line)
	}

	out.backend, out.source = fields[0], fields[1]

	return out, nil
}

// echo checks the connection still carries data both ways.
func (c *conn) echo() error {
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}

	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}

	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}

	if line != "ping\n" {
		return fmt.Errorf("echo: got %q", line)
	}

	return nil
}
