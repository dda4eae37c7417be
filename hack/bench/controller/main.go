// Command controller benchmarks lb-controller's two costs at cluster scale,
// in one process: the reconcile pass (IPAM, Service status, every node's
// desired state) over a simulated cluster of 1,000 nodes and 10,000
// LoadBalancer Services, and the full push of the result to 1,000 agents.
// The agents are pushtest's light ackers: real gRPC servers with mutual TLS
// on loopback that read a push up to its generation and ack it.
//
// recompute_ms is the median of steady-state passes (after a first pass
// allocated everything: every Service re-checked, no status writes, desired
// state recomputed); passes after a node turns not Ready or Ready again are
// shown beside it. push_all_ms is the median time from Pusher.Set until
// every node acked its new generation, in rounds that each add one Service so
// that the shared state, and thus every node's state, changes. rss_mb is the
// process's peak RSS (VmHWM), ackers included; with -ackers-process they run
// in a child process and rss_mb is the controller's alone. The last line is
// stable:
//
//	controller nodes=N services=N recompute_ms=N push_all_ms=N rss_mb=N
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/controller/push"
	"github.com/talos-lb/talos-lb/controller/push/pushtest"
	"github.com/talos-lb/talos-lb/controller/reconcile"
	"github.com/talos-lb/talos-lb/hack/bench/stats"
	"github.com/talos-lb/talos-lb/pkg/ipam"
	"github.com/talos-lb/talos-lb/pkg/pki"
)

type options struct {
	shape      shape
	passes     int
	rounds     int
	pushWait   time.Duration
	cpuProfile string
	memProfile string
	// ackerProcess runs the ackers in a child process: rss_mb is then the controller's alone.
	ackerProcess bool
}

func main() {
	if os.Getenv(envAckers) != "" {
		ackerChild()

		return
	}

	o := options{shape: shape{racks: 4, controlPlanes: 3}}

	flag.IntVar(&o.shape.nodes, "nodes", 1000, "nodes, each with an in-process agent")
	flag.IntVar(&o.shape.services, "services", 10000, "LoadBalancer Services")
	flag.IntVar(&o.shape.namespaces, "namespaces", 50, "namespaces the Services spread over")
	flag.IntVar(&o.shape.localPM, "local", 100, "per mille of Services with externalTrafficPolicy Local")
	flag.IntVar(&o.shape.dualPM, "dual", 50, "per mille of dual-stack Services")
	flag.IntVar(&o.shape.sharedPM, "shared", 10, "per mille of Services in sharing-key pairs")
	flag.IntVar(&o.shape.requestedPM, "requested", 10, "per mille of Services requesting their IP")
	flag.IntVar(&o.passes, "passes", 7, "steady-state passes timed (median reported)")
	flag.IntVar(&o.rounds, "rounds", 5, "full pushes timed (median reported)")
	flag.DurationVar(&o.pushWait, "push-timeout", 2*time.Minute, "give up on a push after this long (the figure is then a lower bound and the program fails)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write CPU profiles to PREFIX.recompute.pprof and PREFIX.push.pprof")
	flag.StringVar(&o.memProfile, "memprofile", "", "write a heap profile (in use and allocated) to this file at the end")
	flag.BoolVar(&o.ackerProcess, "ackers-process", false, "run the ackers in a child process, so that rss_mb is the controller's alone")
	flag.Parse()

	if o.shape.localPM+o.shape.dualPM+o.shape.sharedPM+o.shape.requestedPM > 1000 || o.passes < 1 || o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench-controller: the shares add up to more than 1000 per mille, or no passes or rounds")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)

	t := &tb{}
	err := run(ctx, t, o)

	stop()
	t.close()

	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-controller:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, t *tb, o options) error {
	load, _ := os.ReadFile("/proc/loadavg") //nolint:errcheck // informational
	host, _ := os.Hostname()                //nolint:errcheck
	fmt.Printf("# %s on %s (%d CPUs, %s), load %s", time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), runtime.Version(), load)

	ca, err := pki.NewCA("bench-controller", time.Hour)
	if err != nil {
		return err
	}

	start := time.Now()

	var (
		agents    []pushtest.Agent
		stopChild func() (int, error)
	)

	if o.ackerProcess {
		if agents, stopChild, err = startAckerProcess(t, o.shape.nodes, ca); err != nil {
			return err
		}
	} else {
		agents = pushtest.StartAckers(t, o.shape.nodes, ca)
	}

	addrs := make([]string, len(agents))

	for i, a := range agents {
		addrs[i] = a.Address
	}

	fmt.Printf("started %d ackers in %v%s\n", len(agents), time.Since(start).Round(time.Millisecond), hwmNow())

	m := newSim(o.shape, addrs)
	fmt.Printf("cluster: %s\n", o.shape)

	w := &writer{m: m}
	rec := reconcile.New(reconcile.Options{Classes: lbservice.Classes{Class: class}, AgentPort: agentPort}, ipam.New(), w, zap.NewNop())

	// The cold pass: rebuild (nothing in status yet), allocate, write every status.
	start = time.Now()

	res, err := rec.Pass(ctx, m.cl, m.cfg)
	if err != nil {
		return fmt.Errorf("first pass: %w", err)
	}

	cold := time.Since(start)

	if len(res.Errors) > 0 {
		return fmt.Errorf("first pass: %d Services without an address, e.g. %v", len(res.Errors), firstOf(res.Errors))
	}

	fmt.Printf("first pass (allocates all): %.0f ms, %d status writes, %d Events%s\n", stats.Ms(cold), w.writes, w.events, hwmNow())

	describe(res)

	recompute, err := steadyPasses(ctx, o, rec, m, w)
	if err != nil {
		return err
	}

	nodeChange, err := nodePasses(ctx, o, rec, m)
	if err != nil {
		return err
	}

	pushes, err := pushRounds(ctx, t, o, ca, agents, rec, m)
	if err != nil {
		return err
	}

	if o.memProfile != "" {
		if err := writeHeap(o.memProfile); err != nil {
			return err
		}
	}

	hwm, err := peakRSS()
	if err != nil {
		return err
	}

	rssRow := fmt.Sprintf("| peak RSS (VmHWM, %d in-process ackers included) | %d MiB | | | |\n", len(agents), hwm)

	if stopChild != nil {
		childHWM, err := stopChild()
		if err != nil {
			return fmt.Errorf("the ackers' process: %w", err)
		}

		rssRow = fmt.Sprintf("| peak RSS (VmHWM) of the controller alone / of the ackers' process | %d MiB / %d MiB | | | |\n", hwm, childHWM)
	}

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	if pushes.unfinished != "" {
		fmt.Printf("\nPUSH DID NOT FINISH, push figures are lower bounds: %s\n", pushes.unfinished)
	}

	fmt.Printf("\n| measure | median | min | max | samples |\n|---|---|---|---|---|\n")
	row := func(name string, d []time.Duration) {
		fmt.Printf("| %s | %.0f ms | %.0f ms | %.0f ms | %d |\n", name, stats.Pct(d, 50), stats.Pct(d, 0), stats.Pct(d, 100), len(d))
	}

	row("first pass (cold: allocate and write all)", []time.Duration{cold})
	row("steady-state pass (recompute)", recompute)
	row("pass after a node turned (not) Ready", nodeChange)
	row("first push (TLS handshakes to every agent)", []time.Duration{pushes.cold})
	row("full push (every node a new generation)", pushes.rounds)
	fmt.Print(rssRow)
	fmt.Printf("| Go heap at the end (HeapInuse) / GC cycles | %d MiB / %d | | | |\n\n", ms.HeapInuse>>20, ms.NumGC)

	fmt.Printf("controller nodes=%d services=%d recompute_ms=%.0f push_all_ms=%.0f rss_mb=%d\n",
		o.shape.nodes, o.shape.services, stats.Pct(recompute, 50), stats.Pct(pushes.rounds, 50), hwm)

	if pushes.unfinished != "" {
		return fmt.Errorf("push_all_ms is a lower bound: %s", pushes.unfinished)
	}

	return nil
}

// describe prints the size of what every node gets, and of what in it.
func describe(res *reconcile.Result) {
	sh := res.Desired.Shared
	mib := func(n int) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

	var ips, sets, excluded, listed int

	for _, s := range sh.GetServiceIps() {
		ips += proto.Size(s)
	}

	for _, s := range sh.GetNodeSets() {
		sets += proto.Size(s)
		excluded += len(s.GetExcluded())
		listed += len(s.GetNodes())
	}

	fmt.Printf("desired state: shared part %s encoded, sent to every node: %d service IPs (%s), "+
		"%d node sets (%s: %d member entries, %d excluded-reason entries); %d eligible nodes\n",
		mib(proto.Size(sh)), len(sh.GetServiceIps()), mib(ips), len(sh.GetNodeSets()), mib(sets), listed, excluded, res.Desired.Eligible)
}

// steadyPasses times passes over the unchanged snapshot: nothing to write.
func steadyPasses(ctx context.Context, o options, rec *reconcile.Reconciler, m *sim, w *writer) ([]time.Duration, error) {
	stopProfile, err := profile(o.cpuProfile, "recompute")
	if err != nil {
		return nil, err
	}
	defer stopProfile()

	writes := w.writes
	out := make([]time.Duration, 0, o.passes)

	for i := range o.passes {
		start := time.Now()

		res, err := rec.Pass(ctx, m.cl, m.cfg)
		if err != nil {
			return nil, fmt.Errorf("steady pass %d: %w", i+1, err)
		}

		d := time.Since(start)

		if w.writes != writes || len(res.Errors) > 0 {
			return nil, fmt.Errorf("steady pass %d is not steady: %d status writes, %d errors", i+1, w.writes-writes, len(res.Errors))
		}

		out = append(out, d)
		fmt.Printf("steady pass %d: %5.0f ms\n", i+1, stats.Ms(d))
	}

	return out, nil
}

// nodePasses times passes after one node's Ready condition flips, as when a
// node goes down or comes back: the eligible nodes change for every service
// IP. An even number of flips: the node ends Ready.
func nodePasses(ctx context.Context, o options, rec *reconcile.Reconciler, m *sim) ([]time.Duration, error) {
	flips := o.passes + o.passes%2
	out := make([]time.Duration, 0, flips)
	last := len(m.cl.Nodes) - 1

	for i := range flips {
		// A new object, as the informer delivers it.
		n := m.cl.Nodes[last].DeepCopy()
		ready := setReady(n, i%2 == 1)
		m.cl.Nodes[last] = n

		start := time.Now()

		if _, err := rec.Pass(ctx, m.cl, m.cfg); err != nil {
			return nil, fmt.Errorf("node pass %d: %w", i+1, err)
		}

		d := time.Since(start)
		out = append(out, d)
		fmt.Printf("pass after %s turned %s: %5.0f ms\n", n.Name, ready, stats.Ms(d))
	}

	fmt.Printf("after the passes%s\n", hwmNow())

	return out, nil
}

// setReady sets n's Ready condition and says what it became.
func setReady(n *corev1.Node, ready bool) string {
	status, word := corev1.ConditionFalse, "not Ready"
	if ready {
		status, word = corev1.ConditionTrue, "Ready"
	}

	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			n.Status.Conditions[i].Status = status
		}
	}

	return word
}

// pushResult is what the push rounds measured.
type pushResult struct {
	cold   time.Duration
	rounds []time.Duration
	// unfinished says a push timed out: its figure is a lower bound and no
	// further rounds ran.
	unfinished string
}

// pushRounds runs a pusher against the agents: a first push (which also
// connects), then rounds that each add a Service, run a pass and push its
// result to every node.
func pushRounds(ctx context.Context, t *tb, o options, ca *pki.KeyPair, agents []pushtest.Agent, rec *reconcile.Reconciler, m *sim) (*pushResult, error) {
	sender := push.NewGRPCSender(pushtest.ControllerTLS(t, ca))
	t.Cleanup(func() { sender.Close() }) //nolint:errcheck // at exit

	// Options as lb-controller sets them, but no resync during the benchmark.
	p := push.New(sender, zap.NewNop(), push.Options{Identity: "bench-controller", Resync: -1})

	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})

	go func() {
		defer close(done)

		p.Run(pctx) //nolint:errcheck // ends with the benchmark
	}()

	t.Cleanup(func() {
		cancel()
		<-done
	})

	out := &pushResult{}

	// pushAll runs a pass and pushes its result; unfinished is set when not
	// every agent acked within the timeout.
	pushAll := func() (time.Duration, error) {
		res, err := rec.Pass(ctx, m.cl, m.cfg)
		if err != nil {
			return 0, err
		}

		tg := targets(res)
		if len(tg) != len(agents) {
			return 0, fmt.Errorf("%d targets for %d agents", len(tg), len(agents))
		}

		deadline := time.After(o.pushWait)
		start := time.Now()

		p.Set(tg)

		for p.Counts()[push.StateSynced] != len(agents) {
			select {
			case <-p.Changes():
			case <-deadline:
				out.unfinished = fmt.Sprintf("not every agent acked within %v: %v", o.pushWait, p.Counts())

				return time.Since(start), nil
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}

		d := time.Since(start)

		return d, check(p, agents)
	}

	var err error

	out.cold, err = pushAll()
	if err != nil {
		return nil, fmt.Errorf("first push: %w", err)
	}

	fmt.Printf("first push (connects):   %5.0f ms %s%s\n", stats.Ms(out.cold), out.unfinished, hwmNow())

	stopProfile, err := profile(o.cpuProfile, "push")
	if err != nil {
		return nil, err
	}
	defer stopProfile()

	for i := 0; i < o.rounds && out.unfinished == ""; i++ {
		m.addService()

		d, err := pushAll()
		if err != nil {
			return nil, fmt.Errorf("push round %d: %w", i+1, err)
		}

		out.rounds = append(out.rounds, d)
		fmt.Printf("push round %d:            %5.0f ms %s\n", i+1, stats.Ms(d), out.unfinished)
	}

	if out.unfinished != "" && len(out.rounds) == 0 {
		// The first push did not finish: its time is the lower bound.
		out.rounds = []time.Duration{out.cold}
	}

	var count, bytes int

	for _, a := range agents {
		if a.Acker != nil {
			c, b := a.Acker.Pushes()
			count, bytes = count+c, bytes+b
		}
	}

	if agents[0].Acker != nil {
		fmt.Printf("ackers received %d pushes, %.0f MiB in all%s\n", count, float64(bytes)/(1<<20), hwmNow())
	}

	return out, nil
}

// targets is what lb-controller hands the pusher after a pass (controller/app).
func targets(res *reconcile.Result) map[string]push.Target {
	out := make(map[string]push.Target, len(res.Desired.Nodes))

	for name, ns := range res.Desired.Nodes {
		if ns.Address != "" {
			out[name] = push.Target{Address: ns.Address, State: res.Desired.State(name)}
		}
	}

	return out
}

// check confirms, from the agents' side, that each runs the generation its
// status shows as acked.
func check(p *push.Pusher, agents []pushtest.Agent) error {
	st := p.Status()

	for _, a := range agents {
		s := st[a.Node]
		if s.AckedGeneration != s.DesiredGeneration {
			return fmt.Errorf("%s: desired %d, acked %d", a.Node, s.DesiredGeneration, s.AckedGeneration)
		}

		if a.Acker != nil && a.Acker.Generation() != s.DesiredGeneration {
			return fmt.Errorf("%s: desired %d, agent runs %d", a.Node, s.DesiredGeneration, a.Acker.Generation())
		}
	}

	return nil
}

func profile(prefix, phase string) (func(), error) {
	if prefix == "" {
		return func() {}, nil
	}

	f, err := os.Create(prefix + "." + phase + ".pprof")
	if err != nil {
		return nil, err
	}

	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close() //nolint:errcheck

		return nil, err
	}

	return func() {
		pprof.StopCPUProfile()
		f.Close() //nolint:errcheck
	}, nil
}

func writeHeap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}

	runtime.GC()

	return errors.Join(pprof.WriteHeapProfile(f), f.Close())
}

// peakRSS reads VmHWM from /proc/self/status, in MiB.
func peakRSS() (int, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close() //nolint:errcheck

	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return 0, fmt.Errorf("VmHWM: %w", err)
			}

			return kb >> 10, nil
		}
	}

	return 0, errors.Join(errors.New("no VmHWM in /proc/self/status"), sc.Err())
}

// hwmNow says the peak RSS so far, to see which phase reaches it.
func hwmNow() string {
	mb, err := peakRSS()
	if err != nil {
		return ""
	}

	return fmt.Sprintf(" (peak RSS so far %d MiB)", mb)
}

func firstOf(m map[string]string) string {
	for k, v := range m {
		return k + ": " + v
	}

	return ""
}
