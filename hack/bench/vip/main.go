// Command vip measures control-plane VIP failover as a client sees it: the
// time from a fault to the first TCP connection to the VIP answered by
// another node. It runs talos-lb's agents and, side by side in the same lab
// with the same faults, keepalived (VRRP, advert_int 1) as the reference.
//
// Faults: crash = freeze the holder (SIGSTOP) and cut its cable; graceful =
// SIGTERM the holder's agent (keepalived is not measured for graceful).
// The last line is stable, for scripts:
//
//	vip-failover crash_p50_ms=N crash_p99_ms=N graceful_p99_ms=N keepalived_crash_p99_ms=N trials=N split_brain=N
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/talos-lb/talos-lb/hack/bench/stats"
	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
	"github.com/talos-lb/talos-lb/integration/vipcheck"
)

const waitLong = 30 * time.Second

func main() {
	stats.Main("bench-vip", 10, run)
}

func run(ctx context.Context, trials int) error {
	l, err := lab.New(context.WithoutCancel(ctx), lab.Options{Nodes: 3, Client: true, IPv6: true})
	if err != nil {
		return err
	}
	defer l.Close()

	if _, err := standin.StartAll(ctx, l.Nodes); err != nil {
		return err
	}

	c, err := cluster.Start(context.WithoutCancel(ctx), l, cluster.ControlPlanes(vipcheck.Config(l)))
	if err != nil {
		return err
	}

	sampler, err := vipcheck.StartARPSampler(ctx, l.Client, vipcheck.VIP4)
	if err != nil {
		return err
	}

	b := &bench{ctx: ctx, lab: l, cluster: c}

	var crash, graceful, keepalived []time.Duration

	for i := range trials {
		d, err := b.talosLBCrash()
		if err != nil {
			return fmt.Errorf("crash trial %d: %w", i+1, err)
		}

		crash = append(crash, d)
		fmt.Printf("talos-lb crash    trial %2d: %6.0f ms\n", i+1, stats.Ms(d))
	}

	for i := range trials {
		d, err := b.talosLBGraceful()
		if err != nil {
			return fmt.Errorf("graceful trial %d: %w", i+1, err)
		}

		graceful = append(graceful, d)
		fmt.Printf("talos-lb graceful trial %2d: %6.0f ms\n", i+1, stats.Ms(d))
	}

	rounds, _, split := sampler.Finish()
	fmt.Printf("ARP sampling during talos-lb trials: %d rounds, %d with two MACs answering\n", rounds, len(split))

	for _, a := range c.Agents {
		if err := a.Proc.Stop(); err != nil {
			return err
		}
	}

	// The lab tracks and stops the keepalived processes.
	if err := b.startKeepalived(); err != nil {
		return err
	}

	for i := range trials {
		d, err := b.keepalivedCrash()
		if err != nil {
			return fmt.Errorf("keepalived crash trial %d: %w", i+1, err)
		}

		keepalived = append(keepalived, d)
		fmt.Printf("keepalived crash  trial %2d: %6.0f ms\n", i+1, stats.Ms(d))
	}

	stats.Table(stats.Row{Name: "talos-lb crash", Samples: crash}, stats.Row{Name: "talos-lb graceful", Samples: graceful}, stats.Row{Name: "keepalived crash (VRRP advert_int 1)", Samples: keepalived})

	fmt.Printf("vip-failover crash_p50_ms=%.0f crash_p99_ms=%.0f graceful_p99_ms=%.0f keepalived_crash_p99_ms=%.0f trials=%d split_brain=%d\n",
		stats.Pct(crash, 50), stats.Pct(crash, 99), stats.Pct(graceful, 99), stats.Pct(keepalived, 99), trials, len(split))

	return nil
}

type bench struct {
	ctx     context.Context //nolint:containedctx // one run of the benchmark
	lab     *lab.Lab
	cluster *cluster.Cluster
}

func (b *bench) node(name string) *lab.Host {
	for _, h := range b.lab.Nodes {
		if h.Name == name {
			return h
		}
	}

	return nil
}

func (b *bench) agent(name string) *cluster.Agent {
	for _, a := range b.cluster.Agents {
		if a.Host.Name == name {
			return a
		}
	}

	return nil
}

// settle waits for one holder and a client that has just reached it, so
// every trial starts from a warm neighbour entry.
func (b *bench) settle() (string, error) {
	if err := vipcheck.WaitAgreed(b.ctx, b.cluster, b.lab.Nodes, waitLong); err != nil {
		return "", err
	}

	holder, err := vipcheck.WaitHolder(b.ctx, b.cluster, b.lab.Nodes, "", waitLong)
	if err != nil {
		return "", err
	}

	if _, _, err := vipcheck.FirstAnswer(b.ctx, b.lab.Client, vipcheck.VIP4, "", waitLong); err != nil {
		return "", err
	}

	return holder, nil
}

func (b *bench) talosLBCrash() (time.Duration, error) {
	holder, err := b.settle()
	if err != nil {
		return 0, err
	}

	h, a := b.node(holder), b.agent(holder)

	d, err := b.crash(h, func() error { return a.Proc.Signal(syscall.SIGSTOP) })
	if err != nil {
		return 0, err
	}

	// Thaw while still cut off, so the old holder lets go before it is back.
	if err := a.Proc.Signal(syscall.SIGCONT); err != nil {
		return 0, err
	}

	if err := vipcheck.WaitReleased(h, vipcheck.VIP4, waitLong); err != nil {
		return 0, err
	}

	return d, b.lab.SetPortUp(h, true)
}

// crash freezes the holder h and cuts its cable, and times the client's
// first answer on the VIP from another node.
func (b *bench) crash(h *lab.Host, freeze func() error) (time.Duration, error) {
	if err := freeze(); err != nil {
		return 0, err
	}

	if err := b.lab.SetPortUp(h, false); err != nil {
		return 0, err
	}

	fault := time.Now()

	_, answered, err := vipcheck.FirstAnswer(b.ctx, b.lab.Client, vipcheck.VIP4, h.Name, waitLong)
	if err != nil {
		return 0, err
	}

	return answered.Sub(fault), nil
}

func (b *bench) talosLBGraceful() (time.Duration, error) {
	holder, err := b.settle()
	if err != nil {
		return 0, err
	}

	a := b.agent(holder)

	if err := a.Proc.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}

	fault := time.Now()

	_, answered, err := vipcheck.FirstAnswer(b.ctx, b.lab.Client, vipcheck.VIP4, holder, waitLong)
	if err != nil {
		return 0, err
	}

	return answered.Sub(fault), b.cluster.Restart(b.ctx, a)
}

// keepalivedConfig: all BACKUP with nopreempt, so a returning node does not
// take the VIP back and every trial starts from one stable master.
func keepalivedConfig(h *lab.Host, priority int) string {
	return fmt.Sprintf(`global_defs {
  router_id %s
}
vrrp_instance VI_1 {
  state BACKUP
  nopreempt
  interface eth0
  virtual_router_id 51
  priority %d
  advert_int 1
  virtual_ipaddress {
    %s/32 dev eth0
  }
}
`, h.Name, priority, vipcheck.VIP4)
}

func (b *bench) startKeepalived() error {
	for i, h := range b.lab.Nodes {
		dir := filepath.Join(b.lab.Dir, "keepalived-"+h.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}

		conf := filepath.Join(dir, "keepalived.conf")
		if err := os.WriteFile(conf, []byte(keepalivedConfig(h, 100+i)), 0o600); err != nil {
			return err
		}

		if _, err := h.Start(context.WithoutCancel(b.ctx), "keepalived", []string{
			"keepalived", "--dont-fork", "--log-console", "--vrrp", "--use-file", conf,
			"--pid", filepath.Join(dir, "keepalived.pid"), "--vrrp_pid", filepath.Join(dir, "vrrp.pid"),
		}, nil); err != nil {
			return err
		}
	}

	return nil
}

// keepalivedHolder waits until exactly one node carries the VIP.
func (b *bench) keepalivedHolder() (string, error) {
	deadline := time.Now().Add(waitLong)

	for time.Now().Before(deadline) {
		var holders []string

		for _, h := range b.lab.Nodes {
			has, err := vipcheck.HasAddress(h, vipcheck.VIP4)
			if err != nil {
				return "", err
			}

			if has {
				holders = append(holders, h.Name)
			}
		}

		if len(holders) == 1 {
			return holders[0], nil
		}

		time.Sleep(50 * time.Millisecond)
	}

	return "", fmt.Errorf("keepalived: no single VIP holder within %s", waitLong)
}

// signalNamespace signals every process in a node's namespace: keepalived
// forks its VRRP child, and a crash freezes both.
func signalNamespace(h *lab.Host, sig syscall.Signal) error {
	out, err := exec.Command("ip", "netns", "pids", h.NS).Output()
	if err != nil {
		return fmt.Errorf("listing processes of %s: %w", h.Name, err)
	}

	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}

		if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
			return fmt.Errorf("signalling %d in %s: %w", pid, h.Name, err)
		}
	}

	return nil
}

func (b *bench) keepalivedCrash() (time.Duration, error) {
	holder, err := b.keepalivedHolder()
	if err != nil {
		return 0, err
	}

	if _, _, err := vipcheck.FirstAnswer(b.ctx, b.lab.Client, vipcheck.VIP4, "", waitLong); err != nil {
		return 0, err
	}

	h := b.node(holder)

	d, err := b.crash(h, func() error { return signalNamespace(h, syscall.SIGSTOP) })
	if err != nil {
		return 0, err
	}

	// keepalived keeps the address on a thawed, isolated master; take the
	// node out until it has seen the new master's adverts and stood down.
	if err := signalNamespace(h, syscall.SIGCONT); err != nil {
		return 0, err
	}

	if err := b.lab.SetPortUp(h, true); err != nil {
		return 0, err
	}

	if _, err := b.keepalivedHolder(); err != nil {
		return 0, err
	}

	return d, nil
}
