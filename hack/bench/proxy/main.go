// Command proxy benchmarks TCP proxies side by side on loopback: direct (no
// proxy), talos-lb's proxy (the real lb-agent), HAProxy (mode tcp, roundrobin,
// TCP checks) and go-loadbalancer (KubePrism's library), all in front of the
// same three upstreams. Loads: HTTP keep-alive and new-connection-per-request
// req/s (wrk), bulk GB/s both ways, connect+first-byte latency, and proxy CPU
// per request from /proc. Rounds alternate the order of the targets; results
// are medians, ratios are against direct in the same round.
//
// The last line is machine-readable:
//
//	proxy ka_ratio=X newconn_ratio=X bulk_ratio=X haproxy_ka_ratio=X golb_ka_ratio=X cpu_us_per_req=X rounds=N
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/talos-lb/talos-lb/hack/bench/stats"
)

type options struct {
	bin      string
	rounds   int
	duration time.Duration
	conns    int
	bulkSize int64
	samples  int
	only     string
	profile  string
	agents   agentFlag
}

// agentFlag is -agent 'name=[ENV=value ...] path', repeatable: more lb-agent
// binaries (an older build, other runtime settings) measured as further
// targets in the same rounds.
type agentFlag []agentTarget

type agentTarget struct {
	name, path string
	env        []string
}

func (a *agentFlag) String() string { return fmt.Sprint(*a) }

func (a *agentFlag) Set(v string) error {
	name, rest, _ := strings.Cut(v, "=")
	words := strings.Fields(rest)

	if name == "" || name == "talos-lb" || len(words) == 0 || strings.Contains(words[len(words)-1], "=") {
		return fmt.Errorf("want 'name=[ENV=value ...] path' to an lb-agent, name not talos-lb, got %q", v)
	}

	*a = append(*a, agentTarget{name: name, path: words[len(words)-1], env: words[:len(words)-1]})

	return nil
}

// sample is one target's figures in one round.
type sample struct {
	ka, newconn         float64 // req/s
	down, up            float64 // GB/s
	p50, p99            time.Duration
	cpuKA, cpuNewconn   float64 // proxy CPU µs per request
	cpuBulk             float64 // proxy CPU s per GB moved
	ownBulk             float64 // this program's CPU (client and upstreams) s per GB moved
	kaErrs, newconnErrs string
}

func main() {
	if arg := os.Getenv(serveEnv); arg != "" {
		if err := serveLB(arg); err != nil {
			fmt.Fprintln(os.Stderr, "bench-proxy serve:", err)
			os.Exit(1)
		}

		return
	}

	var o options

	flag.StringVar(&o.bin, "bin", "_out", "directory holding lb-agent, lbctl and golb")
	rounds, err := stats.Trials(5)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-proxy:", err)
		os.Exit(2)
	}

	flag.IntVar(&o.rounds, "rounds", rounds, "rounds, each running every load against every target (default: $TRIALS, else 5)")
	flag.DurationVar(&o.duration, "duration", 4*time.Second, "length of each wrk run")
	flag.IntVar(&o.conns, "conns", 32, "wrk connections")
	flag.Int64Var(&o.bulkSize, "bulk", 2<<30, "bytes per bulk transfer")
	flag.IntVar(&o.samples, "latency-samples", 1000, "connections for the first-byte latency")
	flag.StringVar(&o.only, "only", "", "comma-separated proxies to run (talos-lb, haproxy, go-loadbalancer) when profiling one; default all")
	flag.StringVar(&o.profile, "profile", "", "run talos-lb as package lb inside this program (not lb-agent) and write a CPU profile per load and round into this directory")
	flag.Var(&o.agents, "agent", "'name=[ENV=value ...] path': measure another lb-agent binary as a further target (repeatable)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-proxy:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	load, _ := os.ReadFile("/proc/loadavg") //nolint:errcheck // informational
	host, _ := os.Hostname()                //nolint:errcheck
	fmt.Printf("# %s on %s, load %s", time.Now().UTC().Format(time.RFC3339), host, load)

	var upstreams []string

	for range 3 {
		addr, err := startUpstream()
		if err != nil {
			return err
		}

		upstreams = append(upstreams, addr)
	}

	dir, err := os.MkdirTemp("", "bench-proxy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir) //nolint:errcheck

	targets := []*target{{name: "direct", addr: upstreams[0]}}

	for _, p := range []struct {
		name  string
		start func() (*target, error)
	}{
		{"talos-lb", func() (*target, error) {
			return startOurs(ctx, dir, "talos-lb", o.bin, filepath.Join(o.bin, "lb-agent"), o.profile, nil, upstreams)
		}},
		{"haproxy", func() (*target, error) { return startHAProxy(ctx, dir, upstreams) }},
		{"go-loadbalancer", func() (*target, error) { return startGoLB(ctx, dir, o.bin, upstreams) }},
	} {
		if o.only != "" && !slices.Contains(strings.Split(o.only, ","), p.name) {
			continue
		}

		t, err := p.start()
		if err != nil {
			return err
		}

		defer t.stop()

		targets = append(targets, t)
	}

	for _, a := range o.agents {
		t, err := startOurs(ctx, dir, a.name, o.bin, a.path, "", a.env, upstreams)
		if err != nil {
			return err
		}

		defer t.stop()

		targets = append(targets, t)
	}

	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}

	results := map[string][]sample{}

	for round := range o.rounds {
		// Rotating the order spreads drift (thermal, other load) over every target.
		order := slices.Concat(targets[round%len(targets):], targets[:round%len(targets)])

		for _, t := range order {
			s, err := measure(ctx, t, o, round+1)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, t.name, err)
			}

			results[t.name] = append(results[t.name], s)

			fmt.Printf("# round %d %-16s ka=%.0f newconn=%.0f down=%.2fGB/s up=%.2fGB/s p50=%s p99=%s cpu_ka=%.1fus cpu_newconn=%.1fus cpu_bulk=%.2fs/GB own_bulk=%.2fs/GB %s%s\n",
				round+1, t.name, s.ka, s.newconn, s.down, s.up, s.p50, s.p99, s.cpuKA, s.cpuNewconn, s.cpuBulk, s.ownBulk, s.kaErrs, s.newconnErrs)
		}
	}

	report(targets, results, o.rounds)

	return nil
}

func measure(ctx context.Context, t *target, o options, round int) (sample, error) {
	var s sample

	for _, closing := range []bool{false, true} {
		before, err := t.cpuTime()
		if err != nil {
			return s, err
		}

		var r wrkResult

		load := map[bool]string{false: "ka", true: "newconn"}[closing]
		if err := t.prof.around(load, round, func() (err error) {
			r, err = runWrk(ctx, t.addr, o.conns, o.duration, closing)

			return err
		}); err != nil {
			return s, err
		}

		after, err := t.cpuTime()
		if err != nil {
			return s, err
		}

		cpu := float64((after - before).Microseconds()) / float64(max(r.requests, 1))

		if closing {
			s.newconn, s.cpuNewconn, s.newconnErrs = r.rps, cpu, r.errors
		} else {
			s.ka, s.cpuKA, s.kaErrs = r.rps, cpu, r.errors
		}
	}

	before, err := t.cpuTime()
	if err != nil {
		return s, err
	}

	ownBefore, err := cpuTime(os.Getpid())
	if err != nil {
		return s, err
	}

	if err := t.prof.around("bulk", round, func() (err error) {
		if s.down, err = bulk(t.addr, o.bulkSize, true); err != nil {
			return err
		}

		s.up, err = bulk(t.addr, o.bulkSize, false)

		return err
	}); err != nil {
		return s, err
	}

	after, err := t.cpuTime()
	if err != nil {
		return s, err
	}

	ownAfter, err := cpuTime(os.Getpid())
	if err != nil {
		return s, err
	}

	s.cpuBulk = (after - before).Seconds() / (2 * float64(o.bulkSize) / 1e9)
	s.ownBulk = (ownAfter - ownBefore).Seconds() / (2 * float64(o.bulkSize) / 1e9)

	s.p50, s.p99, err = firstByte(t.addr, o.samples)

	return s, err
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN() // a target left out with -only
	}

	v = slices.Clone(v)
	slices.Sort(v)

	if len(v)%2 == 1 {
		return v[len(v)/2]
	}

	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// col is one figure of a sample.
type col struct {
	name  string
	value func(sample) float64
	ratio bool // print the ratio to direct beside it
}

func report(targets []*target, results map[string][]sample, rounds int) {
	cols := []col{
		{"keep-alive req/s", func(s sample) float64 { return s.ka }, true},
		{"new-conn req/s", func(s sample) float64 { return s.newconn }, true},
		{"bulk down GB/s", func(s sample) float64 { return s.down }, true},
		{"bulk up GB/s", func(s sample) float64 { return s.up }, true},
		{"first byte p50 µs", func(s sample) float64 { return float64(s.p50.Microseconds()) }, false},
		{"first byte p99 µs", func(s sample) float64 { return float64(s.p99.Microseconds()) }, false},
		{"CPU µs/req keep-alive", func(s sample) float64 { return s.cpuKA }, false},
		{"CPU µs/req new-conn", func(s sample) float64 { return s.cpuNewconn }, false},
		{"CPU s/GB bulk", func(s sample) float64 { return s.cpuBulk }, false},
	}

	// ratio is the median over rounds of target/direct in the same round.
	ratio := func(name string, c col) float64 {
		var r []float64
		for i, s := range results[name] {
			r = append(r, c.value(s)/c.value(results["direct"][i]))
		}

		return median(r)
	}

	fmt.Printf("\n| medians of %d rounds | %s |\n|---|%s\n", rounds, strings.Join(names(targets), " | "), strings.Repeat("---|", len(targets)))

	for _, c := range cols {
		row := []string{c.name}

		for _, t := range targets {
			var v []float64
			for _, s := range results[t.name] {
				v = append(v, c.value(s))
			}

			cell := fmt.Sprintf("%.4g", median(v))
			if c.ratio && t.name != "direct" {
				cell += fmt.Sprintf(" (%.2f×)", ratio(t.name, c))
			}

			if !c.ratio && t.name == "direct" && strings.HasPrefix(c.name, "CPU") {
				cell = "–"
			}

			row = append(row, cell)
		}

		fmt.Printf("| %s |\n", strings.Join(row, " | "))
	}

	bulkRatio := (ratio("talos-lb", cols[2]) + ratio("talos-lb", cols[3])) / 2

	var cpu []float64
	for _, s := range results["talos-lb"] {
		cpu = append(cpu, s.cpuKA)
	}

	fmt.Printf("\nproxy ka_ratio=%.2f newconn_ratio=%.2f bulk_ratio=%.2f haproxy_ka_ratio=%.2f golb_ka_ratio=%.2f cpu_us_per_req=%.1f rounds=%d\n",
		ratio("talos-lb", cols[0]), ratio("talos-lb", cols[1]), bulkRatio,
		ratio("haproxy", cols[0]), ratio("go-loadbalancer", cols[0]), median(cpu), rounds)
}

func names(targets []*target) []string {
	var out []string
	for _, t := range targets {
		out = append(out, t.name)
	}

	return out
}
