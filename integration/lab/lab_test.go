package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func fullLab(t *testing.T) *Lab {
	t.Helper()
	return NewForTest(t, Options{Nodes: 3, Router: true, Client: true, IPv6: true})
}

func ping(ctx context.Context, from *Host, to netip.Addr) error {
	_, err := from.Run(ctx, "ping", "-n", "-c1", "-W1", to.String())
	return err
}

// nsIno is the inode of a named namespace, as /proc/PID/ns/net links show it.
func nsIno(t *testing.T, name string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, name), &st); err != nil {
		t.Fatalf("stat netns %s: %v", name, err)
	}
	return st.Ino
}

// alive treats zombies as dead: they hold no namespace, and the init of a container may
// never reap orphans.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func labNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(netnsDir, prefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTopology(t *testing.T) {
	t.Parallel()
	l := fullLab(t)
	ctx := t.Context()

	if len(l.Prefix) != len("tlb12345-") || !strings.HasPrefix(l.Prefix, "tlb") || !strings.HasSuffix(l.Prefix, "-") {
		t.Errorf("prefix %q, want tlb + 5 hex + -", l.Prefix)
	}
	want := map[string][2]string{
		"node-1": {"10.77.0.11", "fd77::11"},
		"node-2": {"10.77.0.12", "fd77::12"},
		"node-3": {"10.77.0.13", "fd77::13"},
		"router": {"10.77.0.1", "fd77::1"},
		"client": {"10.77.0.254", "fd77::fe"},
	}
	hosts := l.Hosts()
	if len(hosts) != len(want) {
		t.Fatalf("got %d hosts, want %d", len(hosts), len(want))
	}
	for _, h := range hosts {
		w := want[h.Name]
		if h.IPv4.String() != w[0] || h.IPv6.String() != w[1] {
			t.Errorf("%s: addresses %s %s, want %s %s", h.Name, h.IPv4, h.IPv6, w[0], w[1])
		}
		if h.NS != l.Prefix+h.Name {
			t.Errorf("%s: NS %q", h.Name, h.NS)
		}
		if _, err := os.Stat(filepath.Join(netnsDir, h.NS)); err != nil {
			t.Errorf("%s: %v", h.Name, err)
		}
		// Kernel view from inside the namespace, independent of the netlink handles.
		out, err := h.Run(ctx, "ip", "-br", "addr", "show", "dev", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), w[0]+"/24") || !strings.Contains(string(out), w[1]+"/64") || !strings.Contains(string(out), "UP") {
			t.Errorf("%s: eth0: %s", h.Name, out)
		}
		if strings.Contains(string(out), "tentative") {
			t.Errorf("%s: tentative address: %s", h.Name, out)
		}
		err = h.Do(func() error {
			link, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			if link.Attrs().HardwareAddr.String() != h.MAC.String() {
				return fmt.Errorf("eth0 MAC %s, Host.MAC %s", link.Attrs().HardwareAddr, h.MAC)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		// Nodes and client route through the router, in both families.
		if h != l.Router {
			for _, fam := range []string{"-4", "-6"} {
				out, err := h.Run(ctx, "ip", fam, "route", "show", "default")
				if err != nil {
					t.Fatal(err)
				}
				gw := l.Router.IPv4.String()
				if fam == "-6" {
					gw = l.Router.IPv6.String()
				}
				if !strings.Contains(string(out), "via "+gw+" dev eth0") {
					t.Errorf("%s: default route %s: %q", h.Name, fam, out)
				}
			}
		}
	}

	// Bridge parameters as the kernel reports them.
	out, err := l.Switch.Run(ctx, "ip", "-d", "link", "show", "br0")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"forward_delay 0 ", "stp_state 0 ", "mcast_snooping 0 ", "state UP", l.Switch.MAC.String()} {
		if !strings.Contains(string(out), s) {
			t.Errorf("br0 lacks %q:\n%s", s, out)
		}
	}
	for _, h := range hosts {
		out, err := l.Switch.Run(ctx, "ip", "-br", "link", "show", "dev", h.SwitchPort)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "UP") {
			t.Errorf("port %s: %s", h.SwitchPort, out)
		}
		out, err = l.Switch.Run(ctx, "ip", "-d", "link", "show", "dev", h.SwitchPort)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "master br0") || !strings.Contains(string(out), "bridge_slave state forwarding") {
			t.Errorf("port %s not forwarding on br0: %s", h.SwitchPort, out)
		}
	}

	// The root namespace never sees the lab's links.
	for _, h := range hosts {
		if _, err := netlink.LinkByName(h.SwitchPort); err == nil {
			t.Errorf("%s visible in the root namespace", h.SwitchPort)
		}
	}
}

func TestPingAndNeighbour(t *testing.T) {
	t.Parallel()
	l := fullLab(t)
	n1 := l.Nodes[0]
	for _, a := range []netip.Addr{n1.IPv4, n1.IPv6} {
		if err := ping(t.Context(), l.Client, a); err != nil {
			t.Fatalf("client -> node-1 %s: %v", a, err)
		}
		mac, state, err := l.Client.NeighMAC(a)
		if err != nil {
			t.Fatal(err)
		}
		if mac.String() != n1.MAC.String() {
			t.Errorf("client's neighbour %s = %s (%s), want %s", a, mac, state, n1.MAC)
		}
		t.Logf("client neighbour %s: %s %s", a, mac, state)
	}
	if _, _, err := l.Client.NeighMAC(l.Nodes[2].IPv4); !errors.Is(err, ErrNoNeighbour) {
		t.Errorf("NeighMAC of an unresolved address: %v, want ErrNoNeighbour", err)
	}
	// Through the router: the node's default route must work too (router -> node-3 is
	// on-link, but the router's own address as source proves the router answers).
	if err := ping(t.Context(), l.Nodes[2], l.Router.IPv6); err != nil {
		t.Error(err)
	}
}

func TestSysctls(t *testing.T) {
	t.Parallel()
	rootBefore, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore")
	if err != nil {
		t.Fatal(err)
	}
	l := fullLab(t)
	ctx := t.Context()

	check := func(h *Host, key, want string) {
		t.Helper()
		got, err := h.Sysctl(key)
		if err != nil {
			t.Error(err)
			return
		}
		if got != want {
			t.Errorf("%s: %s = %s, want %s", h.Name, key, got, want)
		}
	}
	// Second opinion from a separate process inside the namespace (one per host: each
	// ip netns exec costs tens of ms).
	for h, kv := range map[*Host][2]string{
		l.Nodes[0]: {"net.ipv4.conf.eth0.arp_ignore", "1"},
		l.Router:   {"net.ipv4.ip_forward", "1"},
		l.Client:   {"net.ipv4.conf.all.arp_ignore", "0"},
	} {
		out, err := h.Run(ctx, "sysctl", "-n", kv[0])
		if err != nil {
			t.Error(err)
			continue
		}
		if got := strings.TrimSpace(string(out)); got != kv[1] {
			t.Errorf("%s: %s via ip netns exec = %s, want %s", h.Name, kv[0], got, kv[1])
		}
	}
	for _, n := range l.Nodes {
		check(n, "net.ipv4.conf.all.arp_ignore", "1")
		check(n, "net.ipv4.conf.eth0.arp_ignore", "1")
		check(n, "net.ipv4.conf.eth0.arp_announce", "2")
		check(n, "net.ipv4.ip_nonlocal_bind", "1")
		check(n, "net.ipv6.ip_nonlocal_bind", "1")
		check(n, "net.ipv6.conf.eth0.accept_dad", "0")
		check(n, "net.ipv6.conf.eth0.accept_ra", "0")
		check(n, "net.ipv4.ip_forward", "0")
	}
	check(l.Router, "net.ipv4.ip_forward", "1")
	check(l.Router, "net.ipv6.conf.all.forwarding", "1")
	check(l.Router, "net.ipv6.conf.eth0.forwarding", "1")
	check(l.Router, "net.ipv4.fib_multipath_hash_policy", "1")
	check(l.Router, "net.ipv6.fib_multipath_hash_policy", "1")
	check(l.Router, "net.ipv4.conf.all.arp_ignore", "0")
	check(l.Client, "net.ipv4.conf.all.arp_ignore", "0")
	check(l.Client, "net.ipv6.conf.default.accept_dad", "0")
	check(l.Switch, "net.ipv6.conf.all.disable_ipv6", "1")

	rootAfter, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore")
	if err != nil {
		t.Fatal(err)
	}
	if string(rootBefore) != string(rootAfter) {
		t.Errorf("root namespace arp_ignore changed: %q -> %q", rootBefore, rootAfter)
	}
}

func TestDialListen(t *testing.T) {
	t.Parallel()
	l := fullLab(t)
	ctx := t.Context()
	n1 := l.Nodes[0]
	for _, c := range []struct {
		network string
		server  netip.Addr
		client  netip.Addr
	}{
		{"tcp4", n1.IPv4, l.Client.IPv4},
		{"tcp6", n1.IPv6, l.Client.IPv6},
	} {
		ln, err := n1.Listen(ctx, c.network, netip.AddrPortFrom(c.server, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		peer := make(chan string, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				peer <- err.Error()
				return
			}
			defer conn.Close()
			peer <- conn.RemoteAddr().String()
			_, _ = io.Copy(conn, conn)
		}()
		conn, err := l.Client.Dial(ctx, c.network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte("hi\n")); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || line != "hi\n" {
			t.Errorf("echo: %q %v", line, err)
		}
		conn.Close()
		ap, err := netip.ParseAddrPort(<-peer)
		if err != nil || ap.Addr() != c.client {
			t.Errorf("%s: server saw peer %v (%v), want %s", c.network, ap, err, c.client)
		}
	}
	// The listener really is in node-1: the root namespace has no such address (a dial
	// from the root namespace proves nothing here, a sandbox proxy may accept anything).
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, _ := netip.AddrFromSlice(a.IP); Prefix4.Contains(ip.Unmap()) || Prefix6.Contains(ip) {
			t.Errorf("root namespace has lab address %s", a.IPNet)
		}
	}
}

func TestBIRD(t *testing.T) {
	t.Parallel()
	l := NewForTest(t, Options{Nodes: 2, Router: true, IPv6: true})
	ctx := t.Context()

	conf := DefaultBIRDConfig(l)
	if err := CheckBIRDConfig(ctx, conf); err != nil {
		t.Fatalf("default config rejected: %v\n%s", err, conf)
	}
	start := time.Now()
	b, err := l.StartBIRD(ctx, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BIRD ready in %v", time.Since(start))
	out, err := b.Cmd("show", "protocols")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"nodes4", "nodes6", "kernel4", "kernel6", "bfd1", "device1"} {
		if !strings.Contains(out, p) {
			t.Errorf("show protocols lacks %s:\n%s", p, out)
		}
	}

	// Two nodes announce the same /32 and /128 with BIRD as a stand-in speaker: the router
	// must accept the dynamic sessions and install one route per family with two next hops.
	vips := map[int]netip.Prefix{
		netlink.FAMILY_V4: netip.MustParsePrefix("198.51.100.10/32"),
		netlink.FAMILY_V6: netip.MustParsePrefix("2001:db8:100::10/128"),
	}
	for _, n := range l.Nodes {
		as := 65000 + int(n.IPv4.As4()[3])
		nconf := fmt.Sprintf(`router id %s;
protocol device {}
protocol bfd {}
protocol static { ipv4; route %s blackhole; }
protocol static { ipv6; route %s blackhole; }
protocol bgp up4 {
	local %s as %d;
	neighbor %s as %d;
	connect delay time 1;
	bfd on;
	ipv4 { import none; export all; };
}
protocol bgp up6 {
	local %s as %d;
	neighbor %s as %d;
	connect delay time 1;
	bfd on;
	ipv6 { import none; export all; };
}
`, n.IPv4, vips[netlink.FAMILY_V4], vips[netlink.FAMILY_V6],
			n.IPv4, as, l.Router.IPv4, RouterAS, n.IPv6, as, l.Router.IPv6, RouterAS)
		path := filepath.Join(l.Dir, n.Name+"-bird.conf")
		if err := os.WriteFile(path, []byte(nconf), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Start(ctx, "bird", []string{"bird", "-f", "-c", path, "-s", filepath.Join(l.Dir, n.Name+"-bird.ctl")}, nil); err != nil {
			t.Fatal(err)
		}
	}
	hops := func(family int) int {
		rs, err := l.RouterRoutes(family)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Dst != nil && r.Dst.String() == vips[family].String() {
				return max(1, len(r.MultiPath))
			}
		}
		return 0
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && (hops(netlink.FAMILY_V4) != 2 || hops(netlink.FAMILY_V6) != 2) {
		time.Sleep(50 * time.Millisecond)
	}
	if h4, h6 := hops(netlink.FAMILY_V4), hops(netlink.FAMILY_V6); h4 != 2 || h6 != 2 {
		out, _ := b.Cmd("show", "protocols", "all")
		t.Fatalf("router routes have %d (IPv4) and %d (IPv6) next hops, want 2 each\n%s", h4, h6, out)
	}
	t.Logf("ECMP routes with 2 next hops in both families after %v", time.Since(start))
	out, _ = b.Cmd("show", "protocols")
	for _, name := range []string{"node1", "node2", "node6_1", "node6_2"} {
		if !strings.Contains(out, name) {
			t.Errorf("no dynamic session %s in:\n%s", name, out)
		}
	}
	start = time.Now()
	if err := l.Teardown(); err != nil {
		t.Error(err)
	}
	t.Logf("Close with 3 BIRDs: %v", time.Since(start))
}

func TestProcessAndClose(t *testing.T) {
	t.Parallel()
	if r := Unavailable(); r != "" {
		t.Skip(r)
	}
	start := time.Now()
	l, err := New(t.Context(), Options{Nodes: 3, Router: true, Client: true, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("New: %v", time.Since(start))
	t.Cleanup(l.Close)
	ctx := context.Background() // Close, not the context, must end these processes
	n2 := l.Nodes[1]

	p, err := n2.Start(ctx, "sleep", []string{"sleep", "1000"}, []string{"TLB_TEST=1"})
	if err != nil {
		t.Fatal(err)
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.PID()))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("net:[%d]", nsIno(t, n2.NS)); link != want {
		t.Errorf("pid %d is in %s, want node-2's %s", p.PID(), link, want)
	}
	// ip has exec'd: the PID runs sleep itself, with our environment addition.
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID())); strings.TrimSpace(string(comm)) != "sleep" {
		t.Errorf("pid %d is %q, want sleep", p.PID(), comm)
	}
	if env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.PID())); !strings.Contains(string(env), "TLB_TEST=1") {
		t.Errorf("pid %d lacks TLB_TEST=1 in its environment", p.PID())
	}

	// A grandchild that outlives its parent: only the namespace sweep can find it.
	sh, err := l.Nodes[0].Start(ctx, "sh", []string{"sh", "-c", "sleep 1001 & echo $!; wait"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var orphan int
	for deadline := time.Now().Add(3 * time.Second); orphan == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		orphan, _ = strconv.Atoi(strings.TrimSpace(sh.Log()))
	}
	if orphan == 0 {
		t.Fatalf("no child pid in sh's log %q", sh.Log())
	}

	start = time.Now()
	l.Close()
	t.Logf("Close with 2 processes: %v", time.Since(start))
	l.Close() // twice is fine
	if err := l.Teardown(); err != nil {
		t.Errorf("Teardown after Close: %v", err)
	}

	select {
	case <-p.Done():
	default:
		t.Error("sleep not reaped after Close")
	}
	for _, pid := range []int{p.PID(), sh.PID(), orphan} {
		if alive(pid) {
			t.Errorf("pid %d still alive after Close", pid)
		}
	}
	if m := labNamespaces(t, l.Prefix); len(m) != 0 {
		t.Errorf("namespaces left after Close: %v", m)
	}
	if _, err := os.Stat(l.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab dir %s left after Close: %v", l.Dir, err)
	}
	if _, err := n2.Start(ctx, "late", []string{"true"}, nil); err == nil {
		t.Error("Start after Close succeeded")
	}
	if err := n2.Do(func() error { return nil }); err == nil {
		t.Error("Do after Close succeeded")
	}
}

func TestStopEscalates(t *testing.T) {
	t.Parallel()
	l := NewForTest(t, Options{Nodes: 1})
	// Ignores SIGTERM: Stop must fall back to SIGKILL after StopTimeout.
	p, err := l.Nodes[0].Start(t.Context(), "stubborn", []string{"sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); !strings.Contains(p.Log(), "ready") && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	var ee *exec.ExitError
	if err := p.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("exit: %v, want killed by SIGKILL", err)
	}
	// The upper bound only catches hangs: busy CI machines are slow to schedule.
	if took < StopTimeout || took > StopTimeout+5*time.Second {
		t.Errorf("Stop took %v, want about %v", took, StopTimeout)
	}
}

func TestCableCut(t *testing.T) {
	t.Parallel()
	l := NewForTest(t, Options{Nodes: 1, Router: true, Client: true})
	ctx := t.Context()
	n1 := l.Nodes[0]
	if err := ping(ctx, l.Client, n1.IPv4); err != nil {
		t.Fatalf("before cut: %v", err)
	}
	if err := l.SetPortUp(n1, false); err != nil {
		t.Fatal(err)
	}
	if err := ping(ctx, l.Client, n1.IPv4); err == nil {
		t.Fatal("ping went through a cut cable")
	}
	// The node keeps its routes: the cut is on the switch side.
	if out, err := n1.Run(ctx, "ip", "route", "show", "default"); err != nil || !strings.Contains(string(out), "via 10.77.0.1") {
		t.Errorf("node-1 lost its default route: %q %v", out, err)
	}
	if err := l.SetPortUp(n1, true); err != nil {
		t.Fatal(err)
	}
	// No retry: SetPortUp promises the path carries frames when it returns.
	if err := ping(ctx, l.Client, n1.IPv4); err != nil {
		t.Fatalf("after repair: %v", err)
	}
}

func TestConcurrentLabs(t *testing.T) {
	t.Parallel()
	if r := Unavailable(); r != "" {
		t.Skip(r)
	}
	var wg sync.WaitGroup
	labs := make([]*Lab, 2)
	errs := make([]error, 2)
	for i := range labs {
		wg.Go(func() { labs[i], errs[i] = New(t.Context(), Options{Nodes: 1, Client: true}) })
	}
	wg.Wait()
	for i, l := range labs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		t.Cleanup(l.Close)
	}
	if labs[0].Prefix == labs[1].Prefix {
		t.Fatalf("two labs share prefix %s", labs[0].Prefix)
	}
	for _, l := range labs {
		if err := ping(t.Context(), l.Client, l.Nodes[0].IPv4); err != nil {
			t.Error(err)
		}
	}
}

// Not parallel: it sets a package hook that New reads.
func TestNewFailureCleansUp(t *testing.T) {
	if r := Unavailable(); r != "" {
		t.Skip(r)
	}
	var created []string
	testHookAfterNS = func(name string) error {
		created = append(created, name)
		if strings.HasSuffix(name, "-node-2") {
			return errors.New("injected failure")
		}
		return nil
	}
	defer func() { testHookAfterNS = nil }()
	_, err := New(t.Context(), Options{Nodes: 3, Router: true, Client: true})
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("New: %v, want the injected failure", err)
	}
	if len(created) != 3 {
		t.Fatalf("hook saw %v", created)
	}
	prefix := strings.TrimSuffix(created[0], "switch")
	if m := labNamespaces(t, prefix); len(m) != 0 {
		t.Errorf("namespaces left after failed New: %v", m)
	}
	if m, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*")); len(m) != 0 {
		t.Errorf("work dir left after failed New: %v", m)
	}
}

// BenchmarkNewClose reports how long building and tearing down a full lab take.
func BenchmarkNewClose(b *testing.B) {
	if r := Unavailable(); r != "" {
		b.Skip(r)
	}
	var up, down time.Duration
	for b.Loop() {
		start := time.Now()
		l, err := New(b.Context(), Options{Nodes: 3, Router: true, Client: true, IPv6: true})
		if err != nil {
			b.Fatal(err)
		}
		up += time.Since(start)
		start = time.Now()
		if err := l.Teardown(); err != nil {
			b.Fatal(err)
		}
		down += time.Since(start)
	}
	b.ReportMetric(up.Seconds()*1000/float64(b.N), "ms-new/op")
	b.ReportMetric(down.Seconds()*1000/float64(b.N), "ms-close/op")
}

// TestCrashLeavesNoProcesses kills a test process that holds a lab without Close: the
// lab's processes must die with it (Pdeathsig); only namespace names may remain.
func TestCrashLeavesNoProcesses(t *testing.T) {
	if os.Getenv("TLB_CRASH_HELPER") == "1" {
		l, err := New(context.Background(), Options{Nodes: 1})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		p, err := l.Nodes[0].Start(context.Background(), "sleep", []string{"sleep", "1000"}, nil)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Printf("READY %s %s %d\n", l.Prefix, l.Dir, p.PID())
		select {}
	}
	t.Parallel()
	if r := Unavailable(); r != "" {
		t.Skip(r)
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashLeavesNoProcesses$")
	cmd.Env = append(os.Environ(), "TLB_CRASH_HELPER=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var prefix, dir string
	var pid int
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "READY %s %s %d", &prefix, &dir, &pid); err != nil || serr != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper: %q %v %v", line, err, serr)
	}
	t.Cleanup(func() {
		// Tidy what a crash legitimately leaves: names and the work dir.
		for _, p := range labNamespaces(t, prefix) {
			if err := deleteNamed(filepath.Base(p)); err != nil {
				t.Error(err)
			}
		}
		_ = os.RemoveAll(dir)
	})
	if !alive(pid) {
		t.Fatalf("sleep %d not running before the crash", pid)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	for deadline := time.Now().Add(3 * time.Second); alive(pid) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("sleep %d survived the death of its lab's process", pid)
	}
}
