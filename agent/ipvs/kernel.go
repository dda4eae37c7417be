package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Protocol is an IP protocol number, as IPVS keys services by it.
type Protocol uint16

// TCP is the only protocol services are programmed with for now.
const TCP Protocol = 6

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	default:
		return strconv.Itoa(int(p))
	}
}

// Key identifies a virtual service in the kernel: IPVS allows one service per address,
// port and protocol.
type Key struct {
	Address  netip.Addr
	Port     uint16
	Protocol Protocol
}

func (k Key) String() string {
	return k.Protocol.String() + "/" + netip.AddrPortFrom(k.Address, k.Port).String()
}

// Scheduler flags (IP_VS_SVC_F_SCHED1/2). For the hashing schedulers mh and sh they mean
// "fall back to another real server when the hashed one has weight 0" and "hash the source
// port too".
const (
	FlagHashFallback uint32 = 0x0008
	FlagHashPort     uint32 = 0x0010
)

// Forwarding methods a real server can have; the agent programs NAT only and reports the
// others when it finds them on a service it adopts.
const (
	ForwardNAT    = "nat"
	ForwardLocal  = "local"
	ForwardTunnel = "tunnel"
	ForwardDR     = "dr"
	ForwardBypass = "bypass"
)

// Service is one virtual service with its real servers.
type Service struct {
	Key

	Scheduler   string
	Flags       uint32
	RealServers []RealServer
}

// RealServer is one backend of a service.
type RealServer struct {
	Address    netip.AddrPort
	Weight     uint32
	Forwarding string

	// Connection counts; only Kernel.Service fills them in.
	ActiveConnections   uint32
	InactiveConnections uint32
}

// Kernel is the IPVS table of the agent's network namespace. The ServiceController diffs
// against it and calls the mutating methods for the differences only.
type Kernel interface {
	// Check returns nil when IPVS can be programmed and an error wrapping ErrIPVSMissing
	// while the ip_vs module is not loaded. It is called before every reconcile, so an
	// implementation can notice a module that was loaded after the agent started.
	Check() error
	// Service returns the service under k with its real servers and their connection
	// counts; exists is false when the kernel has none.
	Service(k Key) (s Service, exists bool, err error)
	AddService(s Service) error
	// UpdateService changes scheduler and flags in place: connections are kept.
	UpdateService(s Service) error
	DeleteService(k Key) error
	AddRealServer(k Key, rs RealServer) error
	// UpdateRealServer changes weight and forwarding in place: connections are kept.
	UpdateRealServer(k Key, rs RealServer) error
	DeleteRealServer(k Key, addr netip.AddrPort) error
}

// SNAT programs the masquerade rules that send real servers' replies back through this node.
type SNAT interface {
	// Sync makes the rules exactly one per key; with no keys it removes everything it owns.
	Sync(keys []Key) error
}

var (
	// ErrIPVSMissing means the ip_vs module is not loaded; on Talos only the machine config can load it.
	ErrIPVSMissing = errors.New("ip_vs missing: add a Talos KernelModuleConfig for ip_vs and ip_vs_mh (the agent cannot load modules on Talos)")
	// ErrSchedulerMissing means the scheduler's module (ip_vs_<name>) is not loaded.
	ErrSchedulerMissing = errors.New("scheduler module missing")
)

// SchedulerMissingError says which module to add, as ErrSchedulerMissing alone cannot.
func SchedulerMissingError(scheduler string, cause error) error {
	return fmt.Errorf("%w: add ip_vs_%s to the Talos KernelModuleConfig: %w", ErrSchedulerMissing, scheduler, cause)
}
