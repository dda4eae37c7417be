package netns_test

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
	"github.com/talos-lb/talos-lb/integration/vipcheck"
)

// The client resolves the VIP to the holder's MAC (arping, the kernel's
// neighbour table) and reaches it over TCP; a frozen holder is replaced.
func TestVIPCrashFailover(t *testing.T) {
	v := startVIPLab(t)
	sampler := startARPSampler(t, v.lab.Client, vip4)

	holder := v.waitHolder(v.lab.Nodes, "")
	h := v.node(holder)

	out, err := v.lab.Client.Run(t.Context(), "arping", "-c", "1", "-w", "2", "-I", "eth0", vip4.String())
	if err != nil || !strings.Contains(strings.ToLower(string(out)), h.MAC.String()) {
		t.Fatalf("arping %s: want %s (%s)\n%s (%v)", vip4, h.MAC, holder, out, err)
	}

	if got := v.whoamiVia(vip4, ""); got != holder {
		t.Fatalf("TCP to the VIP reached %s, holder is %s", got, holder)
	}

	if mac := neighMAC(t, v.lab.Client, vip4); mac != h.MAC.String() {
		t.Fatalf("client neighbour entry %q, want %s", mac, h.MAC)
	}

	// Crash: freeze the agent and cut the cable.
	agent := v.agent(holder)
	if err := agent.Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	if err := v.lab.SetPortUp(h, false); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	next := v.whoamiVia(vip4, holder)
	t.Logf("crash failover %s → %s: first TCP answer after %v", holder, next, time.Since(start))

	if mac := neighMAC(t, v.lab.Client, vip4); mac != v.node(next).MAC.String() {
		t.Errorf("client neighbour entry %q after failover, want %s (%s)", mac, v.node(next).MAC, next)
	}

	// The frozen node thaws while still cut off: it must let go on its own.
	if err := agent.Proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for hasAddress(t, h, vip4) {
		if time.Now().After(deadline) {
			t.Fatalf("%s kept the VIP after thawing without quorum", holder)
		}

		time.Sleep(50 * time.Millisecond)
	}

	if err := v.lab.SetPortUp(h, true); err != nil {
		t.Fatal(err)
	}

	// Raft promises one leader, not a sticky one: a re-election (e.g. under
	// load) may move the VIP again; what must hold is a single holder.
	if got := v.waitHolder(v.lab.Nodes, ""); got != next {
		t.Logf("after the old holder came back, %s holds the VIP (was %s)", got, next)
	}

	sampler.finish(t)
}

// SIGTERM hands the VIP over: the old node lets go, a peer takes it at once.
func TestVIPGracefulHandover(t *testing.T) {
	v := startVIPLab(t)
	sampler := startARPSampler(t, v.lab.Client, vip4)

	holder := v.waitHolder(v.lab.Nodes, "")
	v.whoamiVia(vip4, "")

	agent := v.agent(holder)
	start := time.Now()

	if err := agent.Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	next := v.whoamiVia(vip4, holder)
	t.Logf("graceful handover %s → %s: first TCP answer after %v", holder, next, time.Since(start))

	select {
	case <-agent.Proc.Done():
	case <-time.After(8 * time.Second):
		t.Fatal("agent did not exit within 8 s of SIGTERM")
	}

	if hasAddress(t, v.node(holder), vip4) || hasAddress(t, v.node(holder), vip6) {
		t.Error("the stopped agent left the VIP on its link")
	}

	if !strings.Contains(agent.Proc.Log(), "leadership handed off") {
		t.Errorf("no hand-off in the agent's log:\n%s", agent.Proc.Log())
	}

	sampler.finish(t)
}

// An unhealthy API server on the holder moves the VIP to a healthy peer.
func TestVIPFollowsAPIServerHealth(t *testing.T) {
	v := startVIPLab(t)

	holder := v.waitHolder(v.lab.Nodes, "")
	v.apis[holder].SetReady(false)

	next := v.waitHolder(v.lab.Nodes, holder)
	if got := v.whoamiVia(vip4, holder); got != next {
		t.Errorf("TCP reached %s, holder is %s", got, next)
	}

	out, err := v.cluster.Lbctl(t.Context(), "-n", v.node(holder).IPv4.String(), "get", "vips")
	if err != nil {
		t.Fatal(err)
	}

	if !strings.Contains(out, "not leader ("+next+" is)") && !strings.Contains(out, "apiserver unhealthy") {
		t.Errorf("old holder's status gives no reason:\n%s", out)
	}
}

// Cut the holder off from its peers but not from the client: the isolated
// node lets go, the majority elects another, and no two MACs ever answer.
func TestVIPPartitionNeverTwoHolders(t *testing.T) {
	v := startVIPLab(t)
	sampler := startARPSampler(t, v.lab.Client, vip4)

	holder := v.waitHolder(v.lab.Nodes, "")
	h := v.node(holder)

	var peers []string

	var rest []*lab.Host

	for _, n := range v.lab.Nodes {
		if n != h {
			peers = append(peers, n.IPv4.String())
			rest = append(rest, n)
		}
	}

	set := strings.Join(peers, ", ")
	rules := fmt.Sprintf(`table inet partition {
  chain in { type filter hook input priority 0; ip saddr { %s } drop; }
  chain out { type filter hook output priority 0; ip daddr { %s } drop; }
}`, set, set)

	runNft(t, h, rules)

	next := v.waitHolder(rest, holder)

	deadline := time.Now().Add(10 * time.Second)
	for hasAddress(t, h, vip4) {
		if time.Now().After(deadline) {
			t.Fatalf("isolated %s kept the VIP", holder)
		}

		time.Sleep(50 * time.Millisecond)
	}

	if got := v.whoamiVia(vip4, holder); got != next {
		t.Errorf("client reached %s, majority's holder is %s", got, next)
	}

	// Heal: the old holder rejoins as a follower.
	runNft(t, h, "delete table inet partition")
	time.Sleep(2 * time.Second)

	if got := v.waitHolder(v.lab.Nodes, ""); got != next {
		t.Logf("after healing %s holds the VIP (was %s)", got, next)
	}

	sampler.finish(t)
}

// Restarting agents, follower and leader, never yields two holders.
func TestVIPAgentRestarts(t *testing.T) {
	v := startVIPLab(t)
	sampler := startARPSampler(t, v.lab.Client, vip4)

	holder := v.waitHolder(v.lab.Nodes, "")

	var follower string

	for _, n := range v.lab.Nodes {
		if n.Name != holder {
			follower = n.Name

			break
		}
	}

	for _, name := range []string{follower, holder} {
		if err := v.cluster.Restart(t.Context(), v.agent(name)); err != nil {
			t.Fatal(err)
		}

		got := v.waitHolder(v.lab.Nodes, "")
		t.Logf("after restarting %s, %s holds the VIP", name, got)
		v.whoamiVia(vip4, "")
	}

	sampler.finish(t)
}

// IPv6: NDP resolves the VIP to the holder, and the client's entry follows a handover.
func TestVIPIPv6(t *testing.T) {
	v := startVIPLab(t)

	holder := v.waitHolder(v.lab.Nodes, "")
	h := v.node(holder)

	out, err := v.lab.Client.Run(t.Context(), "ndisc6", "-1", "-r", "3", "-w", "500", vip6.String(), "eth0")
	if err != nil || !strings.Contains(strings.ToUpper(string(out)), strings.ToUpper(h.MAC.String())) {
		t.Fatalf("ndisc6 %s: want %s (%s)\n%s (%v)", vip6, h.MAC, holder, out, err)
	}

	if got := v.whoamiVia(vip6, ""); got != holder {
		t.Fatalf("TCP over IPv6 reached %s, holder is %s", got, holder)
	}

	if err := v.agent(holder).Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	next := v.whoamiVia(vip6, holder)

	deadline := time.Now().Add(5 * time.Second)
	for neighMAC(t, v.lab.Client, vip6) != v.node(next).MAC.String() {
		if time.Now().After(deadline) {
			t.Fatalf("client's IPv6 neighbour entry %q never moved to %s (%s)", neighMAC(t, v.lab.Client, vip6), v.node(next).MAC, next)
		}

		time.Sleep(20 * time.Millisecond)
	}
}

func runNft(t *testing.T, h *lab.Host, rules string) {
	t.Helper()

	cmd := exec.CommandContext(t.Context(), "ip", "netns", "exec", h.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)

	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", h.Name, err, out)
	}
}

// With vip.ipvs, the holder asks for an IPVS service over every API server.
// The lab's host kernel has no IPVS (the VM tier tests the kernel side), so
// the real agent must say exactly that, with the fix.
func TestVIPIPVSWiringReportsMissingModule(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})

	if _, err := standin.StartAll(t.Context(), l.Nodes); err != nil {
		t.Fatal(err)
	}

	c, err := cluster.Start(t.Context(), l, cluster.ControlPlanes(vipcheck.Config(l)+"  ipvs: {port: 6443}\n"))
	if err != nil {
		t.Fatal(err)
	}

	holder, err := vipcheck.WaitHolder(t.Context(), c, l.Nodes, "", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	var h *lab.Host

	for _, n := range l.Nodes {
		if n.Name == holder {
			h = n
		}
	}

	deadline := time.Now().Add(15 * time.Second)

	for {
		out, err := c.Lbctl(t.Context(), "-n", h.IPv4.String(), "get", "ipvs")

		services, err2 := c.Lbctl(t.Context(), "-n", h.IPv4.String(), "get", "ipvsservice")
		if err == nil && err2 == nil && strings.Contains(out, "KernelModuleConfig") && strings.Contains(services, "10.77.0.11,10.77.0.12,10.77.0.13") {
			break
		}

		if time.Now().After(deadline) {
			t.Fatalf("no IPVS status naming the missing module on %s:\n%s (%v)", holder, out, err)
		}

		time.Sleep(200 * time.Millisecond)
	}
}
