// Package lb is the data path of the agent's local TCP proxies: it accepts
// clients on loopback listeners, picks an upstream (healthy ones in the
// lowest-latency tier first, then round robin or least connections), dials it
// with retries on the next upstream, and relays bytes with kernel splice.
//
// It probes its own upstreams through health.Prober and ejects one at once
// when a dial to it fails. It knows nothing of COSI or of the config file: its
// owner hands it ProxyConfig specs and reads Stats.
package lb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/talos-lb/talos-lb/agent/health"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// Proxy is one TCP proxy: its listeners, upstreams and counters.
type Proxy struct {
	prober health.Prober
	logger *zap.Logger

	// The data path reads these without the mutex.
	spec   atomic.Pointer[resourcepb.ProxyConfigSpec]
	params atomic.Pointer[params]
	table  atomic.Pointer[table]
	rr     atomic.Uint64

	active      atomic.Int64
	total       atomic.Uint64
	failedDials atomic.Uint64
	retries     atomic.Uint64
	refused     atomic.Uint64

	onChange func()

	mu        sync.Mutex
	ups       []*upstream // configured order
	draining  []*upstream // removed, with connections left
	probes    map[*upstream]context.CancelFunc
	listeners map[string]*listener
	loops     []*loop // set by the first Update, for good
	bindErr   error
	closed    bool
	wg        sync.WaitGroup // probers
}

// New returns a proxy with nothing configured; Update starts it. onChange is
// called after upstream health or listeners changed, so the owner can publish
// them without polling; it runs under the proxy's lock, so it must return at
// once and not call the proxy.
func New(prober health.Prober, onChange func(), logger *zap.Logger) *Proxy {
	p := &Proxy{
		prober:    prober,
		logger:    logger,
		onChange:  onChange,
		probes:    map[*upstream]context.CancelFunc{},
		listeners: map[string]*listener{},
	}
	p.table.Store(&table{})

	return p
}

// Update makes the proxy follow spec. Established connections are never cut
// by it: an upstream that leaves drains (see drain_period), and a listener
// that goes away only stops accepting. The error is about listeners that
// could not be bound; everything else in spec is applied regardless.
func (p *Proxy) Update(spec *resourcepb.ProxyConfigSpec) error {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.closed {
		return errors.New("proxy closed")
	}

	old := p.spec.Swap(spec)
	p.params.Store(&params{
		connectTimeout: spec.GetConnectTimeout().AsDuration(),
		dialTimeout:    spec.GetDialTimeout().AsDuration(),
		leastConn:      spec.GetBalance() == "least-connections",
		opts:           sockOpts(spec),
	})

	checkChanged := old == nil || !proto.Equal(old.GetHealthCheck(), spec.GetHealthCheck())

	next := make([]*upstream, 0, len(spec.GetUpstreams()))
	local := localAddrs(p.logger, spec.GetFloating())

	for _, addr := range spec.GetUpstreams() {
		i := slices.IndexFunc(p.ups, func(u *upstream) bool { return u.addr == addr })
		if i < 0 {
			u := &upstream{addr: addr, verdict: health.NewVerdict(), since: time.Now(), local: local(addr)}
			if ap, err := netip.ParseAddrPort(addr); err == nil {
				u.sa = newSockaddr(ap)
			}

			next = append(next, u)
			p.startProbe(u, spec.GetHealthCheck())

			continue
		}

		u := p.ups[i]
		u.local = local(addr) // the node's addresses may have changed since
		p.ups = slices.Delete(p.ups, i, i+1)
		next = append(next, u)

		if checkChanged {
			p.probes[u]()
			p.startProbe(u, spec.GetHealthCheck())
		}
	}

	for _, u := range p.ups {
		p.remove(u, spec.GetDrainPeriod().AsDuration())
	}

	p.ups = next
	p.rebuild()

	p.bindErr = p.startLoops()
	if p.bindErr == nil {
		p.bindErr = p.listen(spec)
	}

	p.onChange()

	return p.bindErr
}

// Close stops accepting and probing; connections still open drain as if
// every upstream had been removed. It waits for its goroutines, not for them.
func (p *Proxy) Close() {
	p.mu.Lock()

	p.closed = true

	for addr, ln := range p.listeners {
		ln.close()
		delete(p.listeners, addr)
	}

	for _, u := range p.ups {
		p.remove(u, p.spec.Load().GetDrainPeriod().AsDuration())
	}

	p.ups = nil
	p.rebuild()
	p.mu.Unlock()

	p.wg.Wait()

	// No client comes any more; each loop ends with its last connection.
	for _, l := range p.loops {
		l.mu.Lock()
		l.closing = true
		l.wake()
		l.mu.Unlock()
	}
}

// startLoops starts the relay loops, one per CPU Go may use.
func (p *Proxy) startLoops() error {
	if p.loops != nil {
		return nil
	}

	loops := make([]*loop, 0, runtime.GOMAXPROCS(0))

	for range cap(loops) {
		l, err := newLoop(p)
		if err != nil {
			for _, l := range loops {
				l.file.Close() //nolint:errcheck
			}

			return fmt.Errorf("relay loop: %w", err)
		}

		loops = append(loops, l)
	}

	p.loops = loops

	for _, l := range loops {
		go l.run()
	}

	return nil
}

// closeConns ends the connections relayed to u (a drain that ran out).
func (p *Proxy) closeConns(u *upstream) {
	for _, l := range p.loops {
		l.mu.Lock()

		for _, s := range l.slots {
			if s.c != nil && s.c.relaying && s.c.u == u {
				s.c.close()
			}
		}

		l.mu.Unlock()
	}
}

// remove takes u out of the picks for good; its connections go on for the
// drain period (forever when it is zero), so a set change drops nobody.
func (p *Proxy) remove(u *upstream, drain time.Duration) {
	u.removed = true
	p.probes[u]()
	delete(p.probes, u)

	if u.active.Load() == 0 {
		return
	}

	p.draining = append(p.draining, u)

	if drain > 0 {
		time.AfterFunc(drain, func() { p.closeConns(u) })
	}
}

func (p *Proxy) startProbe(u *upstream, tmpl *resourcepb.HealthCheckSpec) {
	check := proto.CloneOf(tmpl)
	check.Name = u.addr
	check.Address = u.addr

	ctx, cancel := context.WithCancel(context.Background())
	p.probes[u] = cancel

	p.wg.Go(func() {
		health.Loop(ctx, p.prober, check, func(res health.Result) {
			p.observe(u, res)
		})
	})
}

func (p *Proxy) observe(u *upstream, res health.Result) {
	p.mu.Lock()
	defer p.mu.Unlock()

	if u.removed {
		return // a probe that finished after its upstream left
	}

	spec := p.spec.Load()
	before := u.verdict.State

	if !u.observe(res, spec.GetHealthCheck().GetRise(), spec.GetHealthCheck().GetFall()) {
		return
	}

	if u.verdict.State != before {
		p.logger.Info("upstream health changed", zap.String("upstream", u.addr), zap.String("state", u.verdict.State), zap.Error(res.Err))
		p.onChange()
	}

	p.rebuild()
}

// ejected is the passive check: a dial that failed takes its upstream out
// now, without waiting for probes to agree.
func (p *Proxy) ejected(u *upstream, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()

	if u.removed || !u.eject(time.Now(), err) {
		return
	}

	p.logger.Warn("upstream ejected after a failed dial", zap.String("upstream", u.addr), zap.Error(err))
	p.rebuild()
	p.onChange()
}

func (p *Proxy) rebuild() {
	p.table.Store(buildTable(p.ups))
}

// listen binds the addresses spec adds, closes those it drops, and applies
// the socket options to every listener: accepted sockets inherit them, which
// saves the data path several system calls per connection.
func (p *Proxy) listen(spec *resourcepb.ProxyConfigSpec) error {
	var errs []error

	for addr, ln := range p.listeners {
		if !slices.Contains(spec.GetListen(), addr) {
			ln.close()
			delete(p.listeners, addr)
		}
	}

	opts := sockOpts(spec)

	for _, addr := range spec.GetListen() {
		if ln, ok := p.listeners[addr]; ok {
			if err := ln.setOptions(opts); err != nil {
				errs = append(errs, fmt.Errorf("listener %s: %w", addr, err))
			}

			continue
		}

		tl, err := listenTCP(addr, opts, p.loops)
		if err != nil {
			errs = append(errs, err)

			continue
		}

		p.listeners[addr] = tl

		p.logger.Info("proxy listening", zap.String("address", tl.addr))
	}

	return errors.Join(errs...)
}

// localAddrs returns a test for "this host:port is on this node". Host names
// are never local: resolving them here would make Update wait for DNS; nor
// are floating addresses (VIPs), which another node may hold a moment later.
func localAddrs(logger *zap.Logger, floating []string) func(addr string) bool {
	own := map[netip.Addr]bool{}

	addrs, err := net.InterfaceAddrs()
	if err != nil {
		logger.Warn("cannot list this node's addresses; no upstream counts as local", zap.Error(err))
	}

	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				own[ip.Unmap()] = true
			}
		}
	}

	moving := map[netip.Addr]bool{}

	for _, f := range floating {
		if ip, err := netip.ParseAddr(f); err == nil {
			moving[ip.Unmap()] = true
		}
	}

	return func(addr string) bool {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return false
		}

		ip := ap.Addr().Unmap()

		return !moving[ip] && (ip.IsLoopback() || own[ip])
	}
}
