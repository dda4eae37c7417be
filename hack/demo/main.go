// Command demo brings up the talos-lb lab: network namespaces on one bridge
// with three nodes running real lb-agents, a BIRD2 router and a client, shows
// what lbctl reports from the client, and tears everything down on Ctrl-C
// (or at once with DEMO_HOLD=0).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	if reason := lab.Unavailable(); reason != "" {
		return fmt.Errorf("the lab cannot run here: %s", reason)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The lab must outlive the signal context: teardown runs after Ctrl-C.
	labCtx, cancelLab := context.WithCancel(context.Background())
	defer cancelLab()

	l, err := lab.New(labCtx, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})
	if err != nil {
		return err
	}

	defer func() {
		step("tearing down lab %s", l.Prefix)

		if err := l.Teardown(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: teardown:", err)
		}
	}()

	step("lab %s: switch, %d nodes, router %s, client %s (IPv4 %s, IPv6 %s)", l.Prefix, len(l.Nodes), l.Router.IPv4, l.Client.IPv4, lab.Prefix4, lab.Prefix6)

	bird, err := l.StartBIRD(labCtx, lab.DefaultBIRDConfig(l))
	if err != nil {
		return err
	}

	c, err := cluster.Start(labCtx, l, cluster.Options{
		Node: func(i int, h *lab.Host) cluster.NodeConfig {
			role := "controlplane"
			if i == len(l.Nodes)-1 {
				role = "worker"
			}

			return cluster.NodeConfig{Role: role, Extra: "healthChecks:\n  - name: agent-api\n    kind: tcp\n    address: 127.0.0.1:50070\n  - name: apiserver\n    kind: https\n    address: 127.0.0.1:6443\n    insecureSkipVerify: true\n"}
		},
	})
	if err != nil {
		return err
	}

	for _, a := range c.Agents {
		step("agent on %s (%s): pid %d, log %s", a.Host.Name, a.Host.IPv4, a.Proc.PID(), a.Proc.LogPath())
	}

	// Let every health check reach its first verdict (rise or fall probes) before showing it.
	for i := 0; i < 50; i++ {
		if out, err := c.Lbctl(ctx, "get", "health"); err == nil && !strings.Contains(out, " unknown ") {
			break
		}

		time.Sleep(100 * time.Millisecond)
	}

	for _, args := range [][]string{
		{"version"},
		{"get", "nodes"},
		{"get", "health"},
		{"-n", cluster.Endpoint(l.Nodes[0].IPv6), "get", "configstatus"},
		{"-n", l.Nodes[0].IPv4.String(), "get", "rd"},
	} {
		out, err := c.Lbctl(ctx, args...)
		if err != nil {
			return err
		}

		step("lbctl %v (from the client namespace)", args)
		fmt.Print(out)
	}

	out, err := bird.Cmd("show", "protocols")
	if err != nil {
		return err
	}

	step("BIRD router: birdc show protocols (BGP sessions stay passive until the BGP speaker lands)")
	fmt.Print(out)

	if os.Getenv("DEMO_HOLD") == "0" {
		return nil
	}

	step("lab is up; try: ip netns exec %s %s --lbconfig %s get health --watch", l.Client.NS, "_out/lbctl", c.LBConfig)
	step("Ctrl-C tears it down")
	<-ctx.Done()

	return nil
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}
