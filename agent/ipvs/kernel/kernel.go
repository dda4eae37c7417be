// Package kernel is the real ipvs.Kernel: the IPVS table of the agent's network namespace,
// programmed over generic netlink with github.com/moby/ipvs, plus the sysctls IPVS NAT needs.
//
// It changes only what the controller asks for, service by service and real server by real
// server; it never flushes the table. The sysctls it sets stay set on exit: Kubernetes nodes
// need them anyway, and resetting them could break what else runs there.
package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"

	mobyipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"

	"github.com/talos-lb/talos-lb/agent/ipvs"
)

// sysctls IPVS NAT with masquerading needs, written whenever they differ. They are per
// network namespace, and net.ipv4.vs.* only exists once ip_vs is loaded.
var sysctls = []struct{ key, value, why string }{
	// Without it IPVS marks the packets it forwards as untracked, so nf_nat never sees
	// them and the masquerade rule cannot rewrite their source.
	{"net.ipv4.vs.conntrack", "1", "let nftables masquerade IPVS connections"},
	// Replies, de-masqueraded by conntrack, are addressed to the client and leave through
	// the FORWARD path, where IPVS puts the VIP back as their source.
	{"net.ipv4.ip_forward", "1", "forward replies of real servers to clients"},
	// A removed real server's connections are dropped at their next packet, so clients
	// reconnect (to a live server) at once instead of waiting for a timeout.
	{"net.ipv4.vs.expire_nodest_conn", "1", "end connections of removed real servers at once"},
}

// ipv6Forwarding is the IPv6 counterpart of ip_forward, only set once an IPv6 service is
// programmed: with forwarding on, the kernel ignores router advertisements unless accept_ra=2.
const ipv6Forwarding = "net.ipv6.conf.all.forwarding"

// IPVS is the kernel IPVS table of the calling process's network namespace.
// The zero value is ready to use; it opens its netlink socket on first need.
type IPVS struct {
	mu sync.Mutex
	// h is opened only once IPVS exists: moby/ipvs looks the IPVS netlink family up once
	// per process, at the first handle, and keeps the answer. Opened before ip_vs is
	// loaded, every later call would fail even after the module appears.
	h *mobyipvs.Handle
}

// Check implements ipvs.Kernel.
func (k *IPVS) Check() error {
	k.mu.Lock()
	defer k.mu.Unlock()

	if k.h == nil {
		if _, err := netlink.GenlFamilyGet("IPVS"); err != nil {
			if errors.Is(err, syscall.ENOENT) {
				return ipvs.ErrIPVSMissing
			}

			return fmt.Errorf("looking up the IPVS netlink family: %w", err)
		}

		h, err := mobyipvs.New("")
		if err != nil {
			return fmt.Errorf("opening IPVS netlink socket: %w", err)
		}

		k.h = h
	}

	for _, s := range sysctls {
		if err := ensureSysctl(s.key, s.value); err != nil {
			return fmt.Errorf("sysctl %s=%s (to %s): %w", s.key, s.value, s.why, err)
		}
	}

	return nil
}

// Close releases the netlink socket; the kernel table stays as it is.
func (k *IPVS) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()

	if k.h != nil {
		k.h.Close()
		k.h = nil
	}
}

func (k *IPVS) handle() (*mobyipvs.Handle, error) {
	if k.h == nil {
		return nil, errors.New("IPVS not checked yet")
	}

	return k.h, nil
}

// Service implements ipvs.Kernel.
func (k *IPVS) Service(key ipvs.Key) (ipvs.Service, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()

	h, err := k.handle()
	if err != nil {
		return ipvs.Service{}, false, err
	}

	s, err := h.GetService(toService(ipvs.Service{Key: key}))
	if errors.Is(err, syscall.ESRCH) {
		return ipvs.Service{}, false, nil
	}

	if err != nil {
		return ipvs.Service{}, false, err
	}

	svc := ipvs.Service{
		Key:       key,
		Scheduler: s.SchedName,
		// The kernel reports its own "hashed" bit (IP_VS_SVC_F_HASHED) among the flags.
		Flags: s.Flags &^ 0x0002,
	}

	dests, err := h.GetDestinations(s)
	if err != nil {
		return ipvs.Service{}, false, fmt.Errorf("listing real servers: %w", err)
	}

	for _, d := range dests {
		addr, ok := netip.AddrFromSlice(d.Address)
		if !ok {
			continue
		}

		svc.RealServers = append(svc.RealServers, ipvs.RealServer{
			Address:             netip.AddrPortFrom(addr.Unmap(), d.Port),
			Weight:              uint32(d.Weight),
			Forwarding:          forwarding(d.ConnectionFlags),
			ActiveConnections:   uint32(d.ActiveConnections),
			InactiveConnections: uint32(d.InactiveConnections),
		})
	}

	return svc, true, nil
}

// AddService implements ipvs.Kernel.
func (k *IPVS) AddService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()

	h, err := k.handle()
	if err != nil {
		return err
	}

	if s.Address.Is6() {
		if err := ensureSysctl(ipv6Forwarding, "1"); err != nil {
			return fmt.Errorf("sysctl %s=1 (to forward replies of real servers to clients): %w", ipv6Forwarding, err)
		}
	}

	return schedulerErr(s.Scheduler, h.NewService(toService(s)))
}

// UpdateService implements ipvs.Kernel.
func (k *IPVS) UpdateService(s ipvs.Service) error {
	return k.do(func(h *mobyipvs.Handle) error {
		return schedulerErr(s.Scheduler, h.UpdateService(toService(s)))
	})
}

// DeleteService implements ipvs.Kernel.
func (k *IPVS) DeleteService(key ipvs.Key) error {
	return k.do(func(h *mobyipvs.Handle) error {
		return h.DelService(toService(ipvs.Service{Key: key}))
	})
}

// AddRealServer implements ipvs.Kernel.
func (k *IPVS) AddRealServer(key ipvs.Key, rs ipvs.RealServer) error {
	return k.do(func(h *mobyipvs.Handle) error {
		return h.NewDestination(toService(ipvs.Service{Key: key}), toDestination(rs))
	})
}

// UpdateRealServer implements ipvs.Kernel.
func (k *IPVS) UpdateRealServer(key ipvs.Key, rs ipvs.RealServer) error {
	return k.do(func(h *mobyipvs.Handle) error {
		return h.UpdateDestination(toService(ipvs.Service{Key: key}), toDestination(rs))
	})
}

// DeleteRealServer implements ipvs.Kernel.
func (k *IPVS) DeleteRealServer(key ipvs.Key, addr netip.AddrPort) error {
	return k.do(func(h *mobyipvs.Handle) error {
		return h.DelDestination(toService(ipvs.Service{Key: key}), toDestination(ipvs.RealServer{Address: addr}))
	})
}

func (k *IPVS) do(fn func(*mobyipvs.Handle) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()

	h, err := k.handle()
	if err != nil {
		return err
	}

	return fn(h)
}

func toService(s ipvs.Service) *mobyipvs.Service {
	out := &mobyipvs.Service{
		Address:       net.IP(s.Address.AsSlice()),
		Protocol:      uint16(s.Protocol),
		Port:          s.Port,
		SchedName:     s.Scheduler,
		Flags:         s.Flags,
		AddressFamily: syscall.AF_INET,
		// The netmask only matters for persistence; IPv6 services need a prefix length.
		Netmask: 0xffffffff,
	}

	if s.Address.Is6() {
		out.AddressFamily = syscall.AF_INET6
		out.Netmask = 128
	}

	return out
}

func toDestination(rs ipvs.RealServer) *mobyipvs.Destination {
	family := uint16(syscall.AF_INET)
	if rs.Address.Addr().Is6() {
		family = syscall.AF_INET6
	}

	return &mobyipvs.Destination{
		Address:         net.IP(rs.Address.Addr().AsSlice()),
		Port:            rs.Address.Port(),
		Weight:          int(rs.Weight),
		ConnectionFlags: mobyipvs.ConnectionFlagMasq,
		AddressFamily:   family,
	}
}

func forwarding(flags uint32) string {
	switch flags & mobyipvs.ConnectionFlagFwdMask {
	case mobyipvs.ConnectionFlagMasq:
		return ipvs.ForwardNAT
	case mobyipvs.ConnectionFlagLocalNode:
		return ipvs.ForwardLocal
	case mobyipvs.ConnectionFlagTunnel:
		return ipvs.ForwardTunnel
	case mobyipvs.ConnectionFlagDirectRoute:
		return ipvs.ForwardDR
	default:
		return ipvs.ForwardBypass
	}
}

// schedulerErr explains ENOENT from a service change: the kernel could not find (nor,
// on Talos, load) the scheduler's module.
func schedulerErr(scheduler string, err error) error {
	if errors.Is(err, syscall.ENOENT) {
		return ipvs.SchedulerMissingError(scheduler, err)
	}

	return err
}

// ensureSysctl writes a sysctl only when it differs, so the 2 s reconcile costs a read.
func ensureSysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")

	cur, err := os.ReadFile(path)
	if err != nil {
		return err
	}

	if strings.TrimSpace(string(cur)) == value {
		return nil
	}

	return os.WriteFile(path, []byte(value), 0o644)
}
