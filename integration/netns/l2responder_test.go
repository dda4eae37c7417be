package netns_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/talos-lb/talos-lb/agent/l2svc/responder"
	"github.com/talos-lb/talos-lb/integration/lab"
)

// Service IPs of the L2 tests: inside the lab's subnets, on no interface.
var (
	svc4 = netip.MustParseAddr("10.77.0.200")
	svc6 = netip.MustParseAddr("fd77::200")
)

// responderIn runs a responder inside h's namespace (its sockets live there).
type responderIn struct {
	t *testing.T
	h *lab.Host
	r *responder.Responder
}

func startResponder(t *testing.T, h *lab.Host) *responderIn {
	t.Helper()

	r := responder.New(responder.Options{Refresh: time.Hour})
	t.Cleanup(func() { r.Close() }) //nolint:errcheck

	return &responderIn{t: t, h: h, r: r}
}

func (ri *responderIn) set(ips ...netip.Addr) {
	ri.t.Helper()

	want := map[netip.Addr][]string{}
	for _, ip := range ips {
		want[ip] = []string{"eth0"}
	}

	if err := ri.h.Do(func() error {
		for ip, err := range ri.r.Set(want) {
			return fmt.Errorf("%s: %w", ip, err)
		}

		return nil
	}); err != nil {
		ri.t.Fatal(err)
	}
}

// touch sends a UDP datagram from the client to ip, so its kernel resolves
// (or re-confirms) the neighbour entry.
func touch(t *testing.T, client *lab.Host, ip netip.Addr) {
	t.Helper()

	c, err := client.Dial(t.Context(), "udp", netip.AddrPortFrom(ip, 9).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() //nolint:errcheck

	c.Write([]byte("x")) //nolint:errcheck // nobody listens; the neighbour entry is what counts
}

// waitNeigh waits until the client's neighbour entry for ip names mac.
func waitNeigh(t *testing.T, client *lab.Host, ip netip.Addr, mac string, timeout time.Duration) time.Duration {
	t.Helper()

	start := time.Now()

	for {
		got, state, err := client.NeighMAC(ip)
		if err == nil && got.String() == mac && !strings.Contains(state, "FAILED") && !strings.Contains(state, "INCOMPLETE") {
			return time.Since(start)
		}

		if time.Since(start) > timeout {
			t.Fatalf("client's neighbour entry for %s: %v %s (%v), want %s", ip, got, state, err, mac)
		}

		time.Sleep(time.Millisecond)
	}
}

func arping(t *testing.T, client *lab.Host, ip netip.Addr) (string, error) {
	t.Helper()

	out, err := client.Run(t.Context(), "arping", "-c", "1", "-w", "1", "-I", "eth0", ip.String())

	return strings.ToLower(string(out)), err
}

func ndisc(t *testing.T, client *lab.Host, ip netip.Addr) (string, error) {
	t.Helper()

	out, err := client.Run(t.Context(), "ndisc6", "-1", "-r", "2", "-w", "300", ip.String(), "eth0")

	return strings.ToLower(string(out)), err
}

// The responder answers real ARP and NDP clients for addresses that are on
// no interface, moves the client's neighbour entries when another node takes
// over, and stops answering at once when told.
func TestL2ResponderRealClients(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{Nodes: 2, Client: true, IPv6: true})
	n1, n2, client := l.Nodes[0], l.Nodes[1], l.Client
	mac1, mac2 := n1.MAC.String(), n2.MAC.String()

	r1 := startResponder(t, n1)
	r2 := startResponder(t, n2)

	// Nobody answers yet.
	if out, err := arping(t, client, svc4); err == nil {
		t.Fatalf("arping %s answered before any responder:\n%s", svc4, out)
	}

	r1.set(svc4, svc6)

	if out, err := arping(t, client, svc4); err != nil || !strings.Contains(out, mac1) {
		t.Fatalf("arping %s: want %s\n%s (%v)", svc4, mac1, out, err)
	}

	if out, err := ndisc(t, client, svc6); err != nil || !strings.Contains(out, mac1) {
		t.Fatalf("ndisc6 %s: want %s\n%s (%v)", svc6, mac1, out, err)
	}

	// The client's kernel resolves both to node-1.
	touch(t, client, svc4)
	touch(t, client, svc6)
	waitNeigh(t, client, svc4, mac1, 3*time.Second)
	waitNeigh(t, client, svc6, mac1, 3*time.Second)

	// Takeover by node-2: node-1 stops first, node-2's announcements move the
	// client's existing entries without the client asking.
	r1.set()
	r2.set(svc4, svc6)

	t.Logf("client's IPv4 entry moved to node-2 after %v", waitNeigh(t, client, svc4, mac2, 2*time.Second))
	t.Logf("client's IPv6 entry moved to node-2 after %v", waitNeigh(t, client, svc6, mac2, 2*time.Second))

	if out, err := arping(t, client, svc4); err != nil || !strings.Contains(out, mac2) || strings.Contains(out, mac1) {
		t.Fatalf("arping %s after takeover: want only %s\n%s (%v)", svc4, mac2, out, err)
	}

	if out, err := ndisc(t, client, svc6); err != nil || !strings.Contains(out, mac2) {
		t.Fatalf("ndisc6 %s after takeover: want %s\n%s (%v)", svc6, mac2, out, err)
	}

	stats := r2.r.Stats()
	t.Logf("node-2 responder: %+v", stats)

	if stats.GratuitousARPs == 0 || stats.UnsolicitedNAs == 0 {
		t.Errorf("takeover sent no announcements: %+v", stats)
	}

	// Stop: nobody answers any more.
	r2.set()

	if out, err := arping(t, client, svc4); err == nil {
		t.Fatalf("arping %s answered after the responder stopped:\n%s", svc4, out)
	}

	if out, err := ndisc(t, client, svc6); err == nil {
		t.Fatalf("ndisc6 %s answered after the responder stopped:\n%s", svc6, out)
	}
}

// The client's kernel re-confirms entries with unicast probes (NUD). The
// kernel of the answering node drops them (the address is not its own)
// before any raw IP socket sees them; the packet sockets must answer, or the
// client loses the address for seconds every reachable time.
func TestL2ResponderAnswersNUDProbes(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{Nodes: 1, Client: true, IPv6: true})
	n1, client := l.Nodes[0], l.Client

	// Entries go stale after ~1 s and are probed 1 s later.
	for _, kv := range [][2]string{
		{"net.ipv4.neigh.eth0.base_reachable_time_ms", "1000"},
		{"net.ipv4.neigh.eth0.delay_first_probe_time", "1"},
		{"net.ipv6.neigh.eth0.base_reachable_time_ms", "1000"},
		{"net.ipv6.neigh.eth0.delay_first_probe_time", "1"},
	} {
		if err := client.SetSysctl(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}

	r := startResponder(t, n1)
	r.set(svc4, svc6)

	touch(t, client, svc4)
	touch(t, client, svc6)
	waitNeigh(t, client, svc4, n1.MAC.String(), 3*time.Second)
	waitNeigh(t, client, svc6, n1.MAC.String(), 3*time.Second)

	before := r.r.Stats()

	// Traffic for 6 s: several NUD cycles, each ending in a unicast probe.
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		touch(t, client, svc4)
		touch(t, client, svc6)

		for _, ip := range []netip.Addr{svc4, svc6} {
			if _, state, err := client.NeighMAC(ip); err != nil || strings.Contains(state, "FAILED") || strings.Contains(state, "INCOMPLETE") {
				t.Fatalf("client lost %s: %s (%v)", ip, state, err)
			}
		}

		time.Sleep(100 * time.Millisecond)
	}

	after := r.r.Stats()
	t.Logf("replies during 6 s of traffic: ARP %d, NA %d", after.ARPReplies-before.ARPReplies, after.NAReplies-before.NAReplies)

	if after.ARPReplies == before.ARPReplies || after.NAReplies == before.NAReplies {
		t.Errorf("no unicast probe was answered: before %+v, after %+v", before, after)
	}
}
