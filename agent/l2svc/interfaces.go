package l2svc

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Interface is one network interface as the ownership controller needs it.
type Interface struct {
	Name string
	// Up and Ethernet: answering ARP/NDP on it makes sense.
	Up, Ethernet bool
	Prefixes     []netip.Prefix
}

// Interfaces lists the host's interfaces. It is a side effect behind an
// interface so the controller is tested without a network namespace.
type Interfaces interface {
	List() ([]Interface, error)
}

// NetInterfaces lists the interfaces of the agent's network namespace.
type NetInterfaces struct{}

// List implements Interfaces.
func (NetInterfaces) List() ([]Interface, error) {
	ifis, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}

	out := make([]Interface, 0, len(ifis))

	for _, ifi := range ifis {
		i := Interface{
			Name:     ifi.Name,
			Up:       ifi.Flags&net.FlagUp != 0,
			Ethernet: ifi.Flags&net.FlagLoopback == 0 && len(ifi.HardwareAddr) == 6,
		}

		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", ifi.Name, err)
		}

		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}

			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}

			ones, _ := n.Mask.Size()
			i.Prefixes = append(i.Prefixes, netip.PrefixFrom(ip.Unmap(), ones))
		}

		out = append(out, i)
	}

	return out, nil
}

// chooseInterfaces says where ip is answered: the pushed interfaces (the
// L2Advertisement's), else every up Ethernet interface with a connected
// subnet holding ip, as MetalLB does. problem says what is wrong, if anything.
func chooseInterfaces(ip netip.Addr, pushed []string, ifaces []Interface, listErr error) (names []string, problem string) {
	if listErr != nil {
		if len(pushed) > 0 {
			return slices.Clone(pushed), ""
		}

		return nil, listErr.Error()
	}

	byName := map[string]*Interface{}
	for i := range ifaces {
		byName[ifaces[i].Name] = &ifaces[i]
	}

	if len(pushed) > 0 {
		var bad []string

		for _, name := range pushed {
			switch i := byName[name]; {
			case i == nil:
				bad = append(bad, name+": no such interface")
			case !i.Up:
				bad = append(bad, name+": down")
			case !i.Ethernet:
				bad = append(bad, name+": not Ethernet")
			default:
				names = append(names, name)
			}
		}

		if len(bad) > 0 {
			problem = "interfaces " + strings.Join(bad, ", ")
		}

		return names, problem
	}

	for _, i := range ifaces {
		if !i.Up || !i.Ethernet {
			continue
		}

		for _, p := range i.Prefixes {
			if p.Addr().Is4() == ip.Is4() && !p.Addr().IsLinkLocalUnicast() && p.Masked().Contains(ip) {
				names = append(names, i.Name)

				break
			}
		}
	}

	if len(names) == 0 {
		return nil, fmt.Sprintf("no up interface has a subnet holding %s: name the interfaces in the L2Advertisement", ip)
	}

	slices.Sort(names)

	return names, ""
}
