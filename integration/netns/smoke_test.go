// Package netns_test runs real agents in the netns lab and checks them with real clients.
package netns_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
)

// Three agents on one L2 segment answer lbctl from the client namespace, over IPv4 and IPv6.
func TestSmokeThreeAgentsAnswerLbctl(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})

	c, err := cluster.Start(t.Context(), l, cluster.Options{
		Node: func(i int, _ *lab.Host) cluster.NodeConfig {
			role := "controlplane"
			if i == 2 {
				role = "worker"
			}

			// Each agent probes its own API port, so health reflects a real TCP connect in the node.
			return cluster.NodeConfig{Role: role, Extra: "healthChecks:\n  - name: self\n    kind: tcp\n    address: 127.0.0.1:50070\n"}
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	out, err := c.Lbctl(t.Context(), "get", "nodes", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}

	type doc struct {
		Node string `json:"node"`
		Spec struct {
			NodeName  string   `json:"nodeName"`
			Role      string   `json:"role"`
			Addresses []string `json:"addresses"`
		} `json:"spec"`
	}

	var docs []doc

	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var d doc
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("decoding %q: %v", out, err)
		}

		docs = append(docs, d)
	}

	if len(docs) != 3 {
		t.Fatalf("want 3 node statuses, got %d:\n%s", len(docs), out)
	}

	for i, d := range docs {
		h := l.Nodes[i]
		if d.Spec.NodeName != h.Name {
			t.Errorf("answer from %s names node %q, want %q", d.Node, d.Spec.NodeName, h.Name)
		}

		// The node reports its own lab addresses, read from its namespace via netlink.
		joined := strings.Join(d.Spec.Addresses, " ")
		if !strings.Contains(joined, h.IPv4.String()+"/24") || !strings.Contains(joined, h.IPv6.String()+"/64") {
			t.Errorf("%s reports addresses %v, want %s/24 and %s/64", h.Name, d.Spec.Addresses, h.IPv4, h.IPv6)
		}
	}

	if docs[2].Spec.Role != "worker" || docs[0].Spec.Role != "controlplane" {
		t.Errorf("roles: %s, %s", docs[0].Spec.Role, docs[2].Spec.Role)
	}

	// IPv6 transport to one agent.
	out, err = c.Lbctl(t.Context(), "-n", cluster.Endpoint(l.Nodes[1].IPv6), "get", "health", "self")
	if err != nil {
		t.Fatal(err)
	}

	if !strings.Contains(out, "self") || !strings.Contains(out, l.Nodes[1].IPv6.String()) {
		t.Errorf("health over IPv6:\n%s", out)
	}
}
