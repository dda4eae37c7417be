package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Do runs fn on a locked OS thread that has entered h's network namespace, and puts the
// thread back afterwards. Sockets created by fn stay in h's namespace after Do returns.
// Only fn's own goroutine is inside the namespace: goroutines it starts, and name
// resolution that hands off to other threads, run in the root namespace.
func (h *Host) Do(fn func() error) error {
	if err := h.lab.checkOpen(); err != nil {
		return err
	}
	if err := inNS(h.ns, fn); err != nil {
		return fmt.Errorf("in %s: %w", h.Name, err)
	}
	return nil
}

// Dial connects from inside h's namespace. Use literal IP addresses: see Do.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, addr, err)
	}
	return c, nil
}

// Listen opens a listener inside h's namespace.
func (h *Host) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var lc net.ListenConfig
		var err error
		ln, err = lc.Listen(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", network, addr, err)
	}
	return ln, nil
}

// sysctlPath maps "net.ipv4.conf.eth0.arp_ignore" to its /proc/sys file. /proc/sys/net
// shows the network namespace of the task that opens it, which inside Do is h's.
func sysctlPath(key string) string {
	return "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
}

// Sysctl reads a sysctl (dotted key) as seen inside h's namespace.
func (h *Host) Sysctl(key string) (string, error) {
	var v string
	err := h.Do(func() error {
		b, err := os.ReadFile(sysctlPath(key))
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", key, err)
	}
	return v, nil
}

// SetSysctl writes a sysctl (dotted key) inside h's namespace.
func (h *Host) SetSysctl(key, value string) error {
	return h.writeSysctls([][2]string{{key, value}})
}

func (h *Host) writeSysctls(kvs [][2]string) error {
	return h.Do(func() error {
		for _, kv := range kvs {
			if err := os.WriteFile(sysctlPath(kv[0]), []byte(kv[1]), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", kv[0], kv[1], err)
			}
		}
		return nil
	})
}

// sysctlsFor lists h's sysctls, in write order.
func (l *Lab) sysctlsFor(h *Host) [][2]string {
	var kvs [][2]string
	add := func(k, v string) { kvs = append(kvs, [2]string{k, v}) }

	ifaces := []string{"all", "default"}
	if h != l.Switch {
		ifaces = append(ifaces, hostIface)
	}
	// No DAD, so addresses are usable at once; no RA, so nothing but the lab's own
	// routes appears.
	for _, i := range ifaces {
		add("net.ipv6.conf."+i+".accept_dad", "0")
		add("net.ipv6.conf."+i+".accept_ra", "0")
	}
	switch {
	case h == l.Switch:
		// The bridge forwards IPv6 regardless; without IPv6 on the ports the switch adds
		// no router solicitations or MLD reports of its own to captures.
		add("net.ipv6.conf.all.disable_ipv6", "1")
		add("net.ipv6.conf.default.disable_ipv6", "1")
	case h == l.Router:
		add("net.ipv4.ip_forward", "1")
		add("net.ipv6.conf.all.forwarding", "1")
		// L4 hashing, so one client's flows spread over ECMP next hops.
		add("net.ipv4.fib_multipath_hash_policy", "1")
		add("net.ipv6.fib_multipath_hash_policy", "1")
		// Client and nodes share the segment: a redirect would teach the client
		// to skip the router, and with it the ECMP route under test.
		for _, i := range []string{"all", hostIface} {
			add("net.ipv4.conf."+i+".send_redirects", "0")
		}
	case h == l.Client:
		for _, i := range []string{"all", hostIface} {
			add("net.ipv4.conf."+i+".accept_redirects", "0")
			add("net.ipv6.conf."+i+".accept_redirects", "0")
		}
	default: // node
		// VIPs live on lo: only the current holder may answer ARP for them, and only
		// with a source address of the segment.
		for _, i := range []string{"all", hostIface} {
			add("net.ipv4.conf."+i+".arp_ignore", "1")
			add("net.ipv4.conf."+i+".arp_announce", "2")
		}
		// Agents bind and announce VIPs they may not hold yet.
		add("net.ipv4.ip_nonlocal_bind", "1")
		add("net.ipv6.ip_nonlocal_bind", "1")
	}
	if !ipv6Supported() {
		// A kernel booted with ipv6.disable=1 has no net.ipv6 tree; IPv4 labs still work.
		kvs = slices.DeleteFunc(kvs, func(kv [2]string) bool { return strings.HasPrefix(kv[0], "net.ipv6.") })
	}
	return kvs
}

var ipv6Supported = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
})

// createBridge creates a bridge in the calling thread's namespace: STP off and forward
// delay 0, so ports forward as soon as they have carrier; multicast snooping off, so NDP
// and other multicast reach every port although nobody sends MLD/IGMP reports; a fixed
// MAC, so the bridge does not take on the lowest port MAC, which changes as ports come
// and go. netlink.Bridge cannot set the forward delay, hence the raw request.
func createBridge(name string, mac net.HardwareAddr) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, mac))
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_BR_STP_STATE, nl.Uint32Attr(0))
	data.AddRtAttr(nl.IFLA_BR_FORWARD_DELAY, nl.Uint32Attr(0))
	data.AddRtAttr(nl.IFLA_BR_MCAST_SNOOPING, nl.Uint8Attr(0))
	req.AddData(info)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("RTM_NEWLINK bridge %s: %w", name, err)
	}
	return nil
}

// NeighMAC returns the hardware address and NUD state ("REACHABLE", "STALE", ...) of ip in
// h's neighbour table on eth0.
func (h *Host) NeighMAC(ip netip.Addr) (net.HardwareAddr, string, error) {
	if err := h.lab.checkOpen(); err != nil {
		return nil, "", err
	}
	eth, err := h.nl.LinkByName(hostIface)
	if err != nil {
		return nil, "", fmt.Errorf("%s: find %s: %w", h.Name, hostIface, err)
	}
	family := netlink.FAMILY_V4
	if ip.Is6() && !ip.Is4In6() {
		family = netlink.FAMILY_V6
	}
	ip = ip.Unmap()
	ns, err := h.nl.NeighList(eth.Attrs().Index, family)
	if err != nil {
		return nil, "", fmt.Errorf("%s: list neighbours: %w", h.Name, err)
	}
	for _, n := range ns {
		a, ok := netip.AddrFromSlice(n.IP)
		if ok && a.Unmap() == ip {
			return n.HardwareAddr, neighState(n.State), nil
		}
	}
	return nil, "", fmt.Errorf("%s: no neighbour entry for %s: %w", h.Name, ip, ErrNoNeighbour)
}

// ErrNoNeighbour is returned (wrapped) by NeighMAC when the address has no entry.
var ErrNoNeighbour = errors.New("no neighbour entry")

func neighState(s int) string {
	names := []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"},
		{netlink.NUD_REACHABLE, "REACHABLE"},
		{netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"},
		{netlink.NUD_PROBE, "PROBE"},
		{netlink.NUD_FAILED, "FAILED"},
		{netlink.NUD_NOARP, "NOARP"},
		{netlink.NUD_PERMANENT, "PERMANENT"},
	}
	var out []string
	for _, n := range names {
		if s&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	if len(out) == 0 {
		return "NONE"
	}
	return strings.Join(out, "|")
}

// nsInode identifies a namespace the way /proc/PID/ns/net links name it.
func nsInode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// killStrays SIGKILLs every process still inside one of the lab's namespaces (children
// of lab processes, anything started by hand with `ip netns exec`): such a process would
// keep its namespace alive, invisibly, after the name is deleted.
func (l *Lab) killStrays() error {
	ours := map[uint64]string{}
	for _, h := range l.hosts {
		if !h.ns.IsOpen() {
			continue
		}
		ino, err := nsInode(int(h.ns))
		if err != nil {
			return fmt.Errorf("stat netns %s: %w", h.NS, err)
		}
		ours[ino] = h.NS
	}
	if len(ours) == 0 {
		return nil
	}
	find := func() (map[int]string, error) {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return nil, fmt.Errorf("scan /proc: %w", err)
		}
		self := os.Getpid()
		found := map[int]string{}
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			link, err := os.Readlink("/proc/" + e.Name() + "/ns/net")
			if err != nil { // gone, or a zombie: no longer holds a namespace
				continue
			}
			s, ok := strings.CutPrefix(link, "net:[")
			if !ok {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
			if err != nil {
				continue
			}
			if ns, ok := ours[ino]; ok {
				found[pid] = ns
			}
		}
		return found, nil
	}
	var errs []error
	deadline := time.Now().Add(2 * time.Second)
	for {
		found, err := find()
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for pid, ns := range found {
				errs = append(errs, fmt.Errorf("process %d still in %s after SIGKILL", pid, ns))
			}
			return errors.Join(errs...)
		}
		for pid := range found {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
