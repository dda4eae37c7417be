package lab

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// A link that has just got carrier is not usable yet: the kernel's linkwatch work attaches
// its real qdisc (until then frames go to "noop" and are dropped) and, for a bridge port,
// moves it to forwarding, asynchronously. A first ARP request lost that way costs a 1 s
// retransmit (seen in ~5% of fresh labs), so New and SetPortUp wait for it.

const linkSettleTimeout = 5 * time.Second

// ifOperUp is IF_OPER_UP from linux/if.h.
const ifOperUp = 6

// brStateForwarding is BR_STATE_FORWARDING from linux/if_bridge.h.
const brStateForwarding = 3

type linkState struct {
	operUp  bool
	qdisc   string
	brState int // -1 unless a bridge port
}

func (s linkState) ready(bridgePort bool) bool {
	if !s.operUp || s.qdisc == "" || s.qdisc == "noop" {
		return false
	}
	return !bridgePort || s.brState == brStateForwarding
}

func (s linkState) String() string {
	return fmt.Sprintf("operUp=%v qdisc=%q bridgeState=%d", s.operUp, s.qdisc, s.brState)
}

// dumpLinks reads every link of the calling thread's namespace with a raw RTM_GETLINK,
// because the netlink package parses neither IFLA_QDISC nor the bridge port state.
func dumpLinks() (map[string]linkState, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, fmt.Errorf("RTM_GETLINK dump: %w", err)
	}
	links := map[string]linkState{}
	for _, m := range msgs {
		if len(m) < unix.SizeofIfInfomsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
		if err != nil {
			return nil, fmt.Errorf("parse link attributes: %w", err)
		}
		var name string
		st := linkState{brState: -1}
		for _, a := range attrs {
			switch a.Attr.Type & nl.NLA_TYPE_MASK {
			case unix.IFLA_IFNAME:
				name = strings.TrimRight(string(a.Value), "\x00")
			case unix.IFLA_QDISC:
				st.qdisc = strings.TrimRight(string(a.Value), "\x00")
			case unix.IFLA_OPERSTATE:
				st.operUp = len(a.Value) > 0 && a.Value[0] == ifOperUp
			case unix.IFLA_LINKINFO:
				st.brState = bridgePortState(a.Value)
			}
		}
		if name != "" {
			links[name] = st
		}
	}
	return links, nil
}

// bridgePortState digs IFLA_BRPORT_STATE out of IFLA_LINKINFO, or returns -1.
func bridgePortState(linkinfo []byte) int {
	info, err := nl.ParseRouteAttr(linkinfo)
	if err != nil {
		return -1
	}
	for _, a := range info {
		if a.Attr.Type&nl.NLA_TYPE_MASK != nl.IFLA_INFO_SLAVE_DATA {
			continue
		}
		data, err := nl.ParseRouteAttr(a.Value)
		if err != nil {
			return -1
		}
		for _, d := range data {
			if d.Attr.Type&nl.NLA_TYPE_MASK == nl.IFLA_BRPORT_STATE && len(d.Value) > 0 {
				return int(d.Value[0])
			}
		}
	}
	return -1
}

// waitLinksReady polls h's namespace until every named link is ready.
func (h *Host) waitLinksReady(ctx context.Context, names []string, bridgePorts bool) error {
	deadline := time.Now().Add(linkSettleTimeout)
	return h.Do(func() error {
		for {
			links, err := dumpLinks()
			if err != nil {
				return err
			}
			var notReady []string
			for _, n := range names {
				if st, ok := links[n]; !ok || !st.ready(bridgePorts) {
					notReady = append(notReady, fmt.Sprintf("%s (%v)", n, st))
				}
			}
			if len(notReady) == 0 {
				return nil
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("links not ready: %s: %w", strings.Join(notReady, ", "), err)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("links not ready after %v: %s", linkSettleTimeout, strings.Join(notReady, ", "))
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// waitPathsReady waits until both ends of each host's cable can carry frames.
func (l *Lab) waitPathsReady(ctx context.Context, hosts []*Host) error {
	ports := make([]string, 0, len(hosts))
	for _, h := range hosts {
		ports = append(ports, h.SwitchPort)
		if err := h.waitLinksReady(ctx, []string{hostIface}, false); err != nil {
			return err
		}
	}
	if err := l.Switch.waitLinksReady(ctx, ports, true); err != nil {
		return err
	}
	return nil
}
