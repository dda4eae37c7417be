// Command l2 measures L2 failover of a LoadBalancer service IP as a client
// sees it, with the controller down: 4 real agents in the netns lab get one
// Service (an IPv4 and an IPv6 address) pushed through the controller's code,
// the controller goes away, and then, trial after trial, the owner is frozen
// (SIGSTOP of its agent and its cable cut). Measured from the freeze, in the
// client's namespace: the first ARP reply with another MAC, the first TCP
// connection to the IPv4 and to the IPv6 address answered by another node
// (through the kube-proxy stand-in: an nftables redirect in every node).
// The owner is then thawed and plugged in again, and takes its IPs back
// before the next trial.
//
// The headline is the IPv4 TCP failover; the last line is stable, for scripts:
//
//	l2-service failover_p50_ms=N failover_p99_ms=N trials=N controller=down
package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/talos-lb/talos-lb/hack/bench/stats"
	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/l2check"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/vipcheck"
)

const (
	nodes    = 4
	waitLong = 60 * time.Second
)

func main() {
	stats.Main("bench-l2", 10, run)
}

type bench struct {
	ctx      context.Context //nolint:containedctx // one run of the benchmark
	lab      *lab.Lab
	cluster  *cluster.Cluster
	ip4, ip6 netip.Addr
}

func run(ctx context.Context, trials int) error {
	l, err := lab.New(context.WithoutCancel(ctx), lab.Options{Nodes: nodes, Client: true, IPv6: true})
	if err != nil {
		return err
	}
	defer l.Close()

	var names []string
	for _, h := range l.Nodes {
		names = append(names, h.Name)
	}

	b := &bench{ctx: ctx, lab: l, ip4: l2check.SVC4, ip6: l2check.SameRankV6(l2check.SVC4, names)}

	if _, err := l2check.StartStandIns(ctx, l, b.ip4, b.ip6); err != nil {
		return err
	}

	b.cluster, err = cluster.Start(context.WithoutCancel(ctx), l, l2check.Workers())
	if err != nil {
		return err
	}

	if _, err := l2check.Push(ctx, b.cluster, l2check.Input(b.cluster, []netip.Addr{b.ip4, b.ip6}, nil), waitLong); err != nil {
		return err
	}

	fmt.Println("service pushed; the controller is down from here on")

	if err := l2check.WaitGossip(ctx, b.cluster, l.Nodes, waitLong); err != nil {
		return fmt.Errorf("the agents' liveness gossip (failover needs it): %w", err)
	}

	sampler, err := vipcheck.StartARPSampler(ctx, l.Client, b.ip4)
	if err != nil {
		return err
	}

	var tcp4, tcp6, arpReply []time.Duration

	for i := range trials {
		t, err := b.trial()
		if err != nil {
			return fmt.Errorf("trial %d: %w", i+1, err)
		}

		tcp4, tcp6, arpReply = append(tcp4, t.tcp4), append(tcp6, t.tcp6), append(arpReply, t.arp)
		fmt.Printf("trial %2d: %s → %s  ARP %5.0f ms  TCP IPv4 %5.0f ms  TCP IPv6 %5.0f ms\n",
			i+1, t.from, t.to, stats.Ms(t.arp), stats.Ms(t.tcp4), stats.Ms(t.tcp6))
	}

	rounds, macs, split := sampler.Finish()
	fmt.Printf("ARP sampling during the trials: %d rounds, replies per MAC %v, %d rounds with two MACs answering\n", rounds, macs, len(split))

	stats.Table(
		stats.Row{Name: "first ARP reply with the new MAC", Samples: arpReply},
		stats.Row{Name: "first TCP connect, IPv4 (headline)", Samples: tcp4},
		stats.Row{Name: "first TCP connect, IPv6", Samples: tcp6},
	)

	fmt.Printf("l2-service failover_p50_ms=%.0f failover_p99_ms=%.0f trials=%d controller=down\n",
		stats.Pct(tcp4, 50), stats.Pct(tcp4, 99), trials)

	return nil
}

type trial struct {
	from, to        string
	arp, tcp4, tcp6 time.Duration
}

// trial freezes the owner and times the client's view of the failover, then
// brings the owner back and waits until it owns the IPs again.
func (b *bench) trial() (trial, error) {
	owner, err := l2check.WaitOwner(b.ctx, b.cluster, b.lab.Nodes, b.ip4, "", waitLong)
	if err != nil {
		return trial{}, err
	}

	// A warm client: neighbour entries for both addresses point at the owner,
	// which answers (a returning owner holds back for a while after a pause).
	for _, ip := range []netip.Addr{b.ip4, b.ip6} {
		if err := l2check.WaitClient(b.ctx, b.lab, ip, owner, waitLong); err != nil {
			return trial{}, err
		}
	}

	h, a := l2check.Node(b.lab, owner), l2check.Agent(b.cluster, owner)

	if err := a.Proc.Signal(syscall.SIGSTOP); err != nil {
		return trial{}, err
	}

	if err := b.lab.SetPortUp(h, false); err != nil {
		return trial{}, err
	}

	fault := time.Now()
	t := trial{from: owner}

	var g errgroup.Group

	g.Go(func() error {
		_, at, err := l2check.FirstARPReply(b.ctx, b.lab.Client, b.ip4, h.MAC, waitLong)
		t.arp = at.Sub(fault)

		return err
	})
	g.Go(func() error {
		name, at, err := vipcheck.FirstAnswer(b.ctx, b.lab.Client, b.ip4, owner, waitLong)
		t.tcp4, t.to = at.Sub(fault), name

		return err
	})
	g.Go(func() error {
		_, at, err := vipcheck.FirstAnswer(b.ctx, b.lab.Client, b.ip6, owner, waitLong)
		t.tcp6 = at.Sub(fault)

		return err
	})

	measureErr := g.Wait()

	// Back: thawed and plugged in, the owner rejoins and, best ranked, takes
	// its IPs back.
	err = errors.Join(measureErr, a.Proc.Signal(syscall.SIGCONT), b.lab.SetPortUp(h, true))
	if err != nil {
		return t, err
	}

	if err := l2check.WaitGossip(b.ctx, b.cluster, b.lab.Nodes, waitLong); err != nil {
		return t, err
	}

	if _, err := l2check.WaitOwner(b.ctx, b.cluster, b.lab.Nodes, b.ip4, "", waitLong); err != nil {
		return t, err
	}

	return t, nil
}
