package ipvs

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// DefaultScheduler is Maglev hashing: every node that takes over the VIP maps a flow to the
// same real server, and a real server coming or going moves only its own share of flows.
const DefaultScheduler = "mh"

// schedulers are the ones Talos kernels build (CONFIG_IP_VS_{RR,WRR,LC,SH,MH}). wlc, the
// kernel's own default, is not among them: a service asking for it could never be programmed.
var schedulers = map[string]bool{"mh": true, "rr": true, "wrr": true, "sh": true, "lc": true}

// maxWeight keeps weights inside what moby/ipvs reads back (16 bits), so a weight the
// agent set is the weight it sees and the diff stays quiet.
const maxWeight = math.MaxUint16

// desiredService turns an IPVSService spec into the service the kernel should run.
func desiredService(spec *resourcepb.IPVSServiceSpec) (Service, error) {
	addr, err := netip.ParseAddr(spec.GetAddress())
	if err != nil {
		return Service{}, fmt.Errorf("address: %w", err)
	}

	addr = addr.Unmap()
	if addr.IsUnspecified() || addr.Zone() != "" {
		return Service{}, fmt.Errorf("address %s: want a unicast address without zone", addr)
	}

	port, err := portOf(spec.GetPort())
	if err != nil {
		return Service{}, err
	}

	if p := spec.GetProtocol(); p != "" && p != "tcp" {
		return Service{}, fmt.Errorf("protocol %q: only tcp is supported", p)
	}

	if f := spec.GetForwarding(); f != "" && f != ForwardNAT {
		return Service{}, fmt.Errorf("forwarding %q: only nat is supported", f)
	}

	svc := Service{
		Key:       Key{Address: addr, Port: port, Protocol: TCP},
		Scheduler: cmp.Or(spec.GetScheduler(), DefaultScheduler),
	}

	switch {
	case svc.Scheduler == "wlc":
		return Service{}, errors.New("scheduler wlc: Talos kernels do not build it; use mh")
	case !schedulers[svc.Scheduler]:
		return Service{}, fmt.Errorf("scheduler %q: want one of mh, rr, wrr, sh, lc", svc.Scheduler)
	case svc.Scheduler == "mh" || svc.Scheduler == "sh":
		// Hashing the port spreads one client's connections (a kubelet opens several);
		// the fallback keeps a drained (weight 0) real server from swallowing its flows.
		svc.Flags = FlagHashFallback | FlagHashPort
	}

	for i, rs := range spec.GetRealServers() {
		real, err := desiredRealServer(rs, addr)
		if err != nil {
			return Service{}, fmt.Errorf("real server %d: %w", i, err)
		}

		svc.RealServers = append(svc.RealServers, real)
	}

	sortRealServers(svc.RealServers)

	for i := 1; i < len(svc.RealServers); i++ {
		if svc.RealServers[i].Address == svc.RealServers[i-1].Address {
			return Service{}, fmt.Errorf("real server %s is listed twice", svc.RealServers[i].Address)
		}
	}

	return svc, nil
}

func desiredRealServer(spec *resourcepb.IPVSRealServerSpec, vip netip.Addr) (RealServer, error) {
	addr, err := netip.ParseAddr(spec.GetAddress())
	if err != nil {
		return RealServer{}, fmt.Errorf("address: %w", err)
	}

	addr = addr.Unmap()
	if addr.Is4() != vip.Is4() {
		return RealServer{}, fmt.Errorf("address %s: NAT needs the same IP family as the service address %s", addr, vip)
	}

	port, err := portOf(spec.GetPort())
	if err != nil {
		return RealServer{}, err
	}

	if spec.GetWeight() > maxWeight {
		return RealServer{}, fmt.Errorf("weight %d: at most %d", spec.GetWeight(), maxWeight)
	}

	return RealServer{Address: netip.AddrPortFrom(addr, port), Weight: spec.GetWeight(), Forwarding: ForwardNAT}, nil
}

func portOf(p uint32) (uint16, error) {
	if p == 0 || p > math.MaxUint16 {
		return 0, fmt.Errorf("port %d: want 1-65535", p)
	}

	return uint16(p), nil
}

func sortRealServers(rs []RealServer) {
	slices.SortFunc(rs, func(a, b RealServer) int { return a.Address.Compare(b.Address) })
}
