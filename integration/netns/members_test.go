package netns_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/talos-lb/talos-lb/controller/desired"
	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/l2check"
	"github.com/talos-lb/talos-lb/integration/lab"
)

// memberView is one Member as one agent publishes it.
type memberView struct {
	State string
	Since time.Time
	Self  bool
}

// memberViews reads `lbctl get members` from each of nodes: node -> member -> view.
func memberViews(t *testing.T, c *cluster.Cluster, nodes []*lab.Host) (map[string]map[string]memberView, error) {
	t.Helper()

	endpoints := make([]string, 0, len(nodes))
	for _, h := range nodes {
		endpoints = append(endpoints, h.IPv4.String())
	}

	out, err := c.Lbctl(t.Context(), "-n", strings.Join(endpoints, ","), "get", "members", "-o", "json")
	if err != nil {
		return nil, err
	}

	views := map[string]map[string]memberView{}
	dec := json.NewDecoder(strings.NewReader(out))

	for dec.More() {
		var d struct {
			Node     string `json:"node"`
			Metadata struct {
				ID string `json:"id"`
			} `json:"metadata"`
			Spec struct {
				State string    `json:"state"`
				Since time.Time `json:"since"`
				Self  bool      `json:"self"`
			} `json:"spec"`
		}

		if err := dec.Decode(&d); err != nil {
			return nil, fmt.Errorf("decoding %q: %w", out, err)
		}

		for _, h := range nodes {
			if strings.HasPrefix(d.Node, h.IPv4.String()+":") {
				if views[h.Name] == nil {
					views[h.Name] = map[string]memberView{}
				}

				views[h.Name][d.Metadata.ID] = memberView{State: d.Spec.State, Since: d.Spec.Since, Self: d.Spec.Self}
			}
		}
	}

	return views, nil
}

// waitMember waits until every observer publishes member in state and
// returns how each saw it.
func waitMember(t *testing.T, c *cluster.Cluster, observers []*lab.Host, member, state string, timeout time.Duration) map[string]memberView {
	t.Helper()

	deadline := time.Now().Add(timeout)

	var (
		last map[string]map[string]memberView
		err  error
	)

	for time.Now().Before(deadline) {
		last, err = memberViews(t, c, observers)
		if err == nil {
			got := map[string]memberView{}

			for _, o := range observers {
				if v, ok := last[o.Name][member]; ok && v.State == state {
					got[o.Name] = v
				}
			}

			if len(got) == len(observers) {
				return got
			}
		}

		time.Sleep(50 * time.Millisecond)
	}

	t.Fatalf("not every observer shows %s %s within %s; last: %+v (%v)", member, state, timeout, last, err)

	return nil
}

// waitAllAlive waits until every node shows every node alive, itself as self.
func waitAllAlive(t *testing.T, c *cluster.Cluster, nodes []*lab.Host, timeout time.Duration) {
	t.Helper()

	for _, h := range nodes {
		views := waitMember(t, c, nodes, h.Name, "alive", timeout)

		if !views[h.Name].Self {
			t.Fatalf("%s does not publish itself as self: %+v", h.Name, views[h.Name])
		}
	}
}

// detection is, per observer, how long after start it saw the member enter
// its state (the Member's since, set by the observing agent; every process
// shares the host's clock).
func detection(views map[string]memberView, start time.Time) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, v := range views {
		out[name] = v.Since.Sub(start).Round(time.Millisecond)
	}

	return out
}

// Three real agents gossip their liveness: they find each other from a
// configured join address and from the controller's pushed node list; a
// frozen, cut-off agent is seen dead by the others and alive again after
// it thaws; an agent stopped with SIGTERM is seen "left" at once, and after
// a restart rejoins from the persisted push alone (the controller is gone).
// Detection times are logged, not asserted (docs/members.md has figures).
func TestMembersLiveness(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{Nodes: 3, Client: true})
	n1, n2, n3 := l.Nodes[0], l.Nodes[1], l.Nodes[2]

	c, err := cluster.Start(t.Context(), l, cluster.Options{Node: func(i int, _ *lab.Host) cluster.NodeConfig {
		// Only node-1 knows a peer from its config; node-3 learns of the others from the push.
		if i == 0 {
			return cluster.NodeConfig{Role: "worker", Extra: fmt.Sprintf("members:\n  join: [%s]\n", n2.IPv4)}
		}

		return cluster.NodeConfig{Role: "worker", Extra: "members: {}\n"}
	}})
	if err != nil {
		t.Fatal(err)
	}

	waitAllAlive(t, c, []*lab.Host{n1, n2}, 20*time.Second)

	// The controller pushes the node list once and goes away (the first push
	// also restarts every agent on a certificate the controller role may use).
	in := &desired.Input{}
	for _, a := range c.Agents {
		in.Nodes = append(in.Nodes, desired.Node{Name: a.Host.Name, Address: cluster.Endpoint(a.Host.IPv4), Labels: map[string]string{}, Ready: true})
	}

	if _, err := l2check.Push(t.Context(), c, in, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	waitAllAlive(t, c, l.Nodes, 20*time.Second)

	// Crash: node-3 freezes and its cable is cut.
	a3 := c.Agents[2]
	start := time.Now()

	if err := a3.Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	if err := l.SetPortUp(n3, false); err != nil {
		t.Fatal(err)
	}

	dead := waitMember(t, c, []*lab.Host{n1, n2}, n3.Name, "dead", 20*time.Second)
	t.Logf("frozen node-3 seen dead after %v (by observer; polled at %v)", detection(dead, start), time.Since(start).Round(time.Millisecond))

	// It thaws and is plugged in again: it refutes its death and is alive everywhere.
	start = time.Now()

	if err := a3.Proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	if err := l.SetPortUp(n3, true); err != nil {
		t.Fatal(err)
	}

	alive := waitMember(t, c, []*lab.Host{n1, n2}, n3.Name, "alive", 30*time.Second)
	t.Logf("thawed node-3 seen alive again after %v", detection(alive, start))
	waitAllAlive(t, c, l.Nodes, 20*time.Second)

	// SIGTERM: node-2 leaves and says so.
	a2 := c.Agents[1]
	start = time.Now()

	if err := a2.Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	left := waitMember(t, c, []*lab.Host{n1, n3}, n2.Name, "left", 10*time.Second)
	t.Logf("node-2 stopped with SIGTERM seen left after %v", detection(left, start))

	select {
	case <-a2.Proc.Done():
		t.Logf("node-2's agent exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("node-2's agent did not exit within 10 s of SIGTERM")
	}

	// It starts again with no controller around: the persisted push names its peers.
	start = time.Now()

	if err := c.Restart(t.Context(), a2); err != nil {
		t.Fatal(err)
	}

	alive = waitMember(t, c, []*lab.Host{n1, n3}, n2.Name, "alive", 30*time.Second)
	t.Logf("restarted node-2 seen alive again after %v", detection(alive, start))
	waitAllAlive(t, c, l.Nodes, 20*time.Second)
}
