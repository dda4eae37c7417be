// Command demo brings up the talos-lb lab: network namespaces on one bridge
// with three control-plane nodes running real lb-agents (each beside a
// stand-in API server), a BIRD2 router and a client. It shows what lbctl
// reports from the client, resolves and reaches the control-plane VIP, moves
// it with a live failover; then plays the controller to push two
// LoadBalancer Services (one over L2, one over BGP through BIRD), reaches
// them from the client and fails the L2 one over with the controller down;
// last, a node's local API proxy (KubePrism's job) with its own API server
// going unready.
// It tears everything down on Ctrl-C (or at once with DEMO_HOLD=0).
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
	"github.com/talos-lb/talos-lb/integration/l2check"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
	"github.com/talos-lb/talos-lb/integration/vipcheck"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type demo struct {
	ctx      context.Context //nolint:containedctx // one run of the demo
	lab      *lab.Lab
	c        *cluster.Cluster
	standins map[string]*standin.APIServer
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

	// Stand-in API servers for the VIP's health checks, and kube-proxy's part for the service IPs.
	standins, err := l2check.StartStandIns(labCtx, l, l2check.SVC4, l2check.SVC6, svcBGP)
	if err != nil {
		return err
	}

	c, err := cluster.Start(labCtx, l, cluster.ControlPlanes(vipcheck.Config(l)+l2check.AgentConfig+proxyConfig()))
	if err != nil {
		return err
	}

	d := &demo{ctx: ctx, lab: l, c: c, standins: standins}

	for _, a := range c.Agents {
		step("agent on %s (%s): pid %d, log %s", a.Host.Name, a.Host.IPv4, a.Proc.PID(), a.Proc.LogPath())
	}

	holder, err := vipcheck.WaitHolder(ctx, c, l.Nodes, "", 30*time.Second)
	if err != nil {
		return err
	}

	for _, args := range [][]string{
		{"version"},
		{"get", "nodes"},
		{"get", "health"},
		{"get", "election"},
		{"get", "vips"},
		{"-n", cluster.Endpoint(l.Nodes[0].IPv6), "get", "configstatus"},
	} {
		if err := d.lbctl(args...); err != nil {
			return err
		}
	}

	if err := d.client("arping", "-c", "1", "-w", "2", "-I", "eth0", vipcheck.VIP4.String()); err != nil {
		return err
	}

	if err := d.client("ndisc6", "-1", "-r", "3", "-w", "500", vipcheck.VIP6.String(), "eth0"); err != nil {
		return err
	}

	name, _, err := vipcheck.FirstAnswer(ctx, l.Client, vipcheck.VIP4, "", 10*time.Second)
	if err != nil {
		return err
	}

	step("TCP from the client to %s: answered by %s (the holder is %s)", vipcheck.VIP4, name, holder)

	if err := d.failover(holder); err != nil {
		return err
	}

	if err := d.serviceIPs(bird); err != nil {
		return err
	}

	if err := d.localProxy(); err != nil {
		return err
	}

	out, err := bird.Cmd("show", "protocols")
	if err != nil {
		return err
	}

	step("BIRD router: birdc show protocols (the nodes peer with it for the BGP service IP, pushed by the controller; the control-plane VIP here is L2)")
	fmt.Print(out)

	if os.Getenv("DEMO_HOLD") == "0" {
		return nil
	}

	step("lab is up; try: ip netns exec %s %s --lbconfig %s get vips --watch", l.Client.NS, "_out/lbctl", c.LBConfig)
	step("Ctrl-C tears it down")
	<-ctx.Done()

	return nil
}

// failover freezes the holder and cuts its cable, like a crashed node, and
// shows the client reaching the VIP on another node.
func (d *demo) failover(holder string) error {
	var a *cluster.Agent

	for _, x := range d.c.Agents {
		if x.Host.Name == holder {
			a = x
		}
	}

	step("crash: freezing %s's agent (SIGSTOP) and cutting its cable", holder)

	if err := a.Proc.Signal(syscall.SIGSTOP); err != nil {
		return err
	}

	if err := d.lab.SetPortUp(a.Host, false); err != nil {
		return err
	}

	fault := time.Now()

	next, answered, err := vipcheck.FirstAnswer(d.ctx, d.lab.Client, vipcheck.VIP4, holder, 30*time.Second)
	if err != nil {
		return err
	}

	step("the client reached %s on %s %d ms after the crash", vipcheck.VIP4, next, answered.Sub(fault).Milliseconds())

	var alive []string

	for _, h := range d.lab.Nodes {
		if h.Name != holder {
			alive = append(alive, h.IPv4.String())
		}
	}

	if err := d.lbctl("-n", strings.Join(alive, ","), "get", "vips"); err != nil {
		return err
	}

	step("thawing %s and plugging it back in: it rejoins as a follower", holder)

	if err := a.Proc.Signal(syscall.SIGCONT); err != nil {
		return err
	}

	if err := vipcheck.WaitReleased(a.Host, vipcheck.VIP4, 10*time.Second); err != nil {
		return err
	}

	if err := d.lab.SetPortUp(a.Host, true); err != nil {
		return err
	}

	if _, err := vipcheck.WaitHolder(d.ctx, d.c, d.lab.Nodes, "", 30*time.Second); err != nil {
		return err
	}

	return d.lbctl("get", "election")
}

func (d *demo) lbctl(args ...string) error {
	out, err := d.c.Lbctl(d.ctx, args...)
	if err != nil {
		return err
	}

	step("lbctl %s (from the client namespace)", strings.Join(args, " "))
	fmt.Print(out)

	return nil
}

func (d *demo) client(argv ...string) error {
	out, err := d.lab.Client.Run(d.ctx, argv...)

	step("%s (from the client namespace)", strings.Join(argv, " "))
	fmt.Print(string(out))

	if err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}

	return nil
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}
