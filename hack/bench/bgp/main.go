// Command bgp measures, from the router's kernel table, how fast the BGP
// routes of a BGP-mode control-plane VIP follow the nodes: a frozen node
// behind a cut cable (withdrawn by BFD, 100 ms × 3), a SIGTERM (Cease), and an
// API server that turns healthy again (announced; this includes the health
// check's rise of 2 × 200 ms). BIRD is the router. The last line is stable:
//
//	bgp withdraw_crash_bfd_p99_ms=N withdraw_graceful_p99_ms=N announce_p99_ms=N nexthops=N trials=N
package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/talos-lb/talos-lb/hack/bench/stats"
	"github.com/talos-lb/talos-lb/integration/bgpcheck"
	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
)

const waitLong = 30 * time.Second

func main() {
	stats.Main("bench-bgp", 10, run)
}

func run(ctx context.Context, trials int) error {
	long := context.WithoutCancel(ctx)

	l, err := lab.New(long, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})
	if err != nil {
		return err
	}
	defer l.Close()

	if _, err := l.StartBIRD(long, lab.DefaultBIRDConfig(l)); err != nil {
		return err
	}

	apis, err := standin.StartAll(ctx, l.Nodes)
	if err != nil {
		return err
	}

	c, err := cluster.Start(long, l, cluster.ControlPlanes(bgpcheck.Config(bgpcheck.Options{BFD: true})))
	if err != nil {
		return err
	}

	n := len(l.Nodes)
	if _, err := bgpcheck.WaitNextHops(l, bgpcheck.VIP4, n, waitLong); err != nil {
		return err
	}

	var crash, graceful, announce []time.Duration

	for i := range trials {
		a := c.Agents[i%n]

		d, err := measure(l, n-1, func() error {
			if err := a.Proc.Signal(syscall.SIGSTOP); err != nil {
				return err
			}

			return l.SetPortUp(a.Host, false)
		})
		if err != nil {
			return fmt.Errorf("crash trial %d: %w", i+1, err)
		}

		crash = append(crash, d)
		fmt.Printf("crash (BFD)  trial %2d: %5.0f ms\n", i+1, stats.Ms(d))

		if err := a.Proc.Signal(syscall.SIGCONT); err != nil {
			return err
		}

		if err := l.SetPortUp(a.Host, true); err != nil {
			return err
		}

		if _, err := bgpcheck.WaitNextHops(l, bgpcheck.VIP4, n, waitLong); err != nil {
			return err
		}
	}

	for i := range trials {
		a := c.Agents[i%n]

		d, err := measure(l, n-1, func() error { return a.Proc.Signal(syscall.SIGTERM) })
		if err != nil {
			return fmt.Errorf("graceful trial %d: %w", i+1, err)
		}

		graceful = append(graceful, d)
		fmt.Printf("graceful     trial %2d: %5.0f ms\n", i+1, stats.Ms(d))

		if err := c.Restart(long, a); err != nil {
			return err
		}

		if _, err := bgpcheck.WaitNextHops(l, bgpcheck.VIP4, n, waitLong); err != nil {
			return err
		}
	}

	for i := range trials {
		api := apis[c.Agents[i%n].Host.Name]
		api.SetReady(false)

		if _, err := bgpcheck.WaitNextHops(l, bgpcheck.VIP4, n-1, waitLong); err != nil {
			return err
		}

		d, err := measure(l, n, func() error { api.SetReady(true); return nil })
		if err != nil {
			return fmt.Errorf("announce trial %d: %w", i+1, err)
		}

		announce = append(announce, d)
		fmt.Printf("announce     trial %2d: %5.0f ms\n", i+1, stats.Ms(d))
	}

	hops, err := bgpcheck.NextHops(l, bgpcheck.VIP4)
	if err != nil {
		return err
	}

	stats.Table(stats.Row{Name: "withdraw, frozen node (BFD 100 ms × 3)", Samples: crash}, stats.Row{Name: "withdraw, SIGTERM (Cease)", Samples: graceful}, stats.Row{Name: "announce after /readyz recovers (incl. rise 2 × 200 ms)", Samples: announce})

	fmt.Printf("bgp withdraw_crash_bfd_p99_ms=%.0f withdraw_graceful_p99_ms=%.0f announce_p99_ms=%.0f nexthops=%d trials=%d\n",
		stats.Pct(crash, 99), stats.Pct(graceful, 99), stats.Pct(announce, 99), len(hops), trials)

	return nil
}

// measure applies a fault and times the router's route reaching want next hops.
func measure(l *lab.Lab, want int, fault func() error) (time.Duration, error) {
	start := time.Now()

	if err := fault(); err != nil {
		return 0, err
	}

	at, err := bgpcheck.WaitNextHops(l, bgpcheck.VIP4, want, waitLong)
	if err != nil {
		return 0, err
	}

	return at.Sub(start), nil
}
