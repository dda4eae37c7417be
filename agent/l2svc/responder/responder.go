// Package responder answers ARP requests (IPv4) and neighbour solicitations
// (IPv6) from userspace for addresses that are on no interface of this host:
// load-balancer service IPs whose traffic kube-proxy or Cilium carry once it
// arrives. It also sends the gratuitous ARPs and unsolicited neighbour
// advertisements that move clients' neighbour entries to this host when it
// takes an address over, and repeats them on a cadence.
//
// It owns raw AF_PACKET sockets, one per interface and family, and the
// solicited-node multicast memberships of the IPv6 addresses it answers for.
// It never adds addresses or routes, and decides nothing: the caller says,
// with Set, exactly which addresses to answer for on which interfaces.
//
// pkg/l2 sends the same announcements for the control-plane VIP, but through
// sockets bound to the address, which must be on the link; these addresses
// are not, so the frames go out of the responder's own packet sockets.
package responder

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Options tune announcements; zero values take the defaults.
type Options struct {
	// Burst is how many gratuitous ARPs / unsolicited NAs announce a takeover (6).
	Burst int
	// BurstInterval separates them (250 ms): the first one moves the clients at
	// once, the others cover a lost frame — and Linux clients, which ignore an
	// ARP update within neigh locktime (1 s) of the last one: a burst shorter
	// than that leaves a client that just heard the old owner on the old MAC
	// until its entry goes stale (seconds).
	BurstInterval time.Duration
	// Refresh repeats the announcement of every address answered for (10 s),
	// for switches' MAC tables and clients that missed the burst.
	Refresh time.Duration
	// PauseGap: when the agent did not run for longer than this (500 ms), peers
	// may have declared it dead (the LAN gossip needs ~0.9 s) and taken its
	// addresses over; it then answers nothing for PauseHold (2 s), while the
	// gossip settles, and announces what it still owns afterwards.
	PauseGap, PauseHold time.Duration
	Logger              *zap.Logger
}

func (o *Options) defaults() {
	if o.Burst <= 0 {
		o.Burst = 6
	}

	if o.BurstInterval <= 0 {
		o.BurstInterval = 250 * time.Millisecond
	}

	if o.Refresh <= 0 {
		o.Refresh = 10 * time.Second
	}

	if o.PauseGap <= 0 {
		o.PauseGap = 500 * time.Millisecond
	}

	if o.PauseHold <= 0 {
		o.PauseHold = 2 * time.Second
	}

	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// Stats counts frames sent since the responder started.
type Stats struct {
	ARPReplies, NAReplies, GratuitousARPs, UnsolicitedNAs uint64
	// Stale counts requests dropped unanswered because they waited too long
	// in the socket (the agent was frozen or starved).
	Stale uint64
	// Pauses counts the pauses of the agent that made it hold back.
	Pauses uint64
}

// Responder answers for the addresses given to Set. Its methods are safe for
// concurrent use.
type Responder struct {
	opts Options

	arpReplies, naReplies, garps, unsolicitedNAs, stale atomic.Uint64

	guard *pauseGuard
	stop  chan struct{}
	done  chan struct{}

	mu     sync.Mutex
	links  map[string]*link
	closed bool
}

// New returns a responder answering for nothing.
func New(opts Options) *Responder {
	opts.defaults()

	r := &Responder{
		opts: opts, links: map[string]*link{},
		guard: newPauseGuard(opts.PauseGap, opts.PauseHold),
		stop:  make(chan struct{}), done: make(chan struct{}),
	}

	go func() {
		defer close(r.done)

		r.guard.run(r.stop, r.paused, r.resumed)
	}()

	return r
}

// Stats returns the frame counters.
func (r *Responder) Stats() Stats {
	return Stats{
		ARPReplies: r.arpReplies.Load(), NAReplies: r.naReplies.Load(),
		GratuitousARPs: r.garps.Load(), UnsolicitedNAs: r.unsolicitedNAs.Load(), Stale: r.stale.Load(),
		Pauses: r.guard.pauses.Load(),
	}
}

// Set makes the responder answer for exactly these addresses, each on its
// interfaces (by name), from the moment it returns; an address no longer
// given is not answered any more, also when Set fails for others. An address
// newly answered on an interface is announced there at once.
//
// The result holds what went wrong per address (a missing interface, a socket
// that would not open); the address is still answered wherever it could be.
func (r *Responder) Set(want map[netip.Addr][]string) map[netip.Addr]error {
	r.mu.Lock()
	defer r.mu.Unlock()

	errs := map[netip.Addr]error{}

	if r.closed {
		for ip := range want {
			errs[ip] = errors.New("responder closed")
		}

		return errs
	}

	byLink := map[string]map[netip.Addr]bool{}

	for ip, links := range want {
		ip = ip.Unmap()

		for _, name := range links {
			if byLink[name] == nil {
				byLink[name] = map[netip.Addr]bool{}
			}

			byLink[name][ip] = true
		}
	}

	// Stop first: losing an address must never wait behind opening sockets.
	for name, l := range r.links {
		if _, ok := byLink[name]; !ok {
			l.close()
			delete(r.links, name)
		}
	}

	for name, addrs := range byLink {
		if err := r.setLink(name, addrs); err != nil {
			for ip := range addrs {
				errs[ip] = errors.Join(errs[ip], err)
			}
		}
	}

	return errs
}

func (r *Responder) setLink(name string, addrs map[netip.Addr]bool) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		if l := r.links[name]; l != nil {
			l.close()
			delete(r.links, name)
		}

		return fmt.Errorf("interface %s: %w", name, err)
	}

	l := r.links[name]
	if l != nil && (l.index != ifi.Index || l.mac.String() != ifi.HardwareAddr.String()) {
		// Recreated or readdressed: sockets and announcements start over.
		l.close()
		delete(r.links, name)
		l = nil
	}

	if l == nil {
		if len(ifi.HardwareAddr) != 6 {
			return fmt.Errorf("interface %s has no Ethernet address", name)
		}

		l = newLink(r, ifi)
		r.links[name] = l
	}

	return l.set(addrs)
}

// Close stops answering for everything and releases the sockets.
func (r *Responder) Close() error {
	r.mu.Lock()

	if r.closed {
		r.mu.Unlock()

		return nil
	}

	r.closed = true

	for name, l := range r.links {
		l.close()
		delete(r.links, name)
	}

	r.mu.Unlock()

	close(r.stop)
	<-r.done

	return nil
}

func (r *Responder) paused(d time.Duration) {
	r.opts.Logger.Warn("the agent did not run for a while: peers may have taken its addresses over; answering nothing until the gossip settles",
		zap.Duration("paused", d), zap.Duration("hold", r.opts.PauseHold))
}

// resumed announces everything still answered for, as on a takeover: peers
// may have moved the clients away during the pause.
func (r *Responder) resumed() {
	r.opts.Logger.Info("answering again after the pause")
	r.Reannounce()
}

// Reannounce sends the takeover announcements again for every address
// answered for, on every interface: the clients may have been pointed
// elsewhere (a peer that answered during a partition).
func (r *Responder) Reannounce() {
	r.mu.Lock()
	defer r.mu.Unlock()

	for _, l := range r.links {
		for ip := range *l.owned.Load() {
			l.wg.Add(1)

			go l.burst(ip)
		}
	}
}

// link answers on one interface.
type link struct {
	r     *Responder
	name  string
	index int
	mac   net.HardwareAddr
	log   *zap.Logger

	// owned is read for every frame without a lock: Set swaps it whole.
	owned atomic.Pointer[map[netip.Addr]bool]

	// Opened on first use of the family; read by the announcing goroutines.
	arp, nd atomic.Pointer[packetSocket]
	groups  *groupSocket

	stop chan struct{}
	wg   sync.WaitGroup
}

func newLink(r *Responder, ifi *net.Interface) *link {
	l := &link{
		r: r, name: ifi.Name, index: ifi.Index, mac: ifi.HardwareAddr,
		log:  r.opts.Logger.With(zap.String("interface", ifi.Name)),
		stop: make(chan struct{}),
	}

	empty := map[netip.Addr]bool{}
	l.owned.Store(&empty)

	l.wg.Add(1)

	go l.refresh()

	return l
}

func (l *link) has(ip netip.Addr) bool {
	return (*l.owned.Load())[ip.Unmap()]
}

// set answers for exactly addrs on this link; called with r.mu held.
func (l *link) set(addrs map[netip.Addr]bool) error {
	old := *l.owned.Load()

	var errs []error

	need4, need6 := false, false

	for ip := range addrs {
		if ip.Is4() {
			need4 = true
		} else {
			need6 = true
		}
	}

	if need4 && l.arp.Load() == nil {
		s, err := openPacket(l.index, ethPARP, arpRequestFilter)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: ARP: %w", l.name, err))
		} else {
			l.arp.Store(s)
			l.wg.Add(1)

			go l.serve(s, arpReplyFor, &l.r.arpReplies)
		}
	}

	if need6 && l.nd.Load() == nil {
		s, err := openPacket(l.index, ethPIPv6, neighborSolicitationFilter)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: NDP: %w", l.name, err))
		} else {
			l.nd.Store(s)
			l.wg.Add(1)

			go l.serve(s, naReplyFor, &l.r.naReplies)
		}
	}

	if need6 && l.groups == nil {
		g, err := openGroups(l.index)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.name, err))
		} else {
			l.groups = g
		}
	}

	// Removed addresses stop being answered before anything else happens.
	next := maps.Clone(addrs)
	l.owned.Store(&next)

	if l.groups != nil {
		for ip := range old {
			if ip.Is6() && !addrs[ip] {
				l.groups.leave(ip)
			}
		}

		for ip := range addrs {
			if ip.Is6() && !old[ip] {
				if err := l.groups.join(ip); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", l.name, err))
				}
			}
		}
	}

	for ip := range addrs {
		if !old[ip] {
			l.log.Info("answering for address", zap.Stringer("address", ip))
			l.wg.Add(1)

			go l.burst(ip)
		}
	}

	for ip := range old {
		if !addrs[ip] {
			l.log.Info("no longer answering for address", zap.Stringer("address", ip))
		}
	}

	return errors.Join(errs...)
}

type replyFunc func(frame []byte, mac net.HardwareAddr, owned func(netip.Addr) bool) ([]byte, net.HardwareAddr, error)

func (l *link) serve(s *packetSocket, reply replyFunc, count *atomic.Uint64) {
	defer l.wg.Done()

	buf := make([]byte, 1600)

	for {
		n, err := s.read(buf, func() { l.r.stale.Add(1) })
		if err != nil {
			select {
			case <-l.stop:
			default:
				l.log.Error("reading from packet socket; not answering on this interface", zap.Error(err))
			}

			return
		}

		if !l.r.guard.awake() {
			continue
		}

		out, dst, err := reply(buf[:n], l.mac, l.has)
		if err != nil || out == nil {
			continue
		}

		if err := s.write(out, dst); err != nil {
			l.log.Warn("sending reply", zap.Error(err))

			continue
		}

		count.Add(1)
	}
}

// announce sends one gratuitous ARP or unsolicited NA for ip.
func (l *link) announce(ip netip.Addr) {
	var (
		frame []byte
		err   error
		s     *packetSocket
		count *atomic.Uint64
		dst   net.HardwareAddr
	)

	if ip.Is4() {
		frame, err = gratuitousARP(ip, l.mac)
		s, count, dst = l.arp.Load(), &l.r.garps, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	} else {
		frame, err = unsolicitedNA(ip, l.mac)
		s, count, dst = l.nd.Load(), &l.r.unsolicitedNAs, allNodesMAC
	}

	if s == nil || !l.r.guard.awake() {
		return
	}

	if err == nil {
		err = s.write(frame, dst)
	}

	if err != nil {
		l.log.Warn("announcing address", zap.Stringer("address", ip), zap.Error(err))

		return
	}

	count.Add(1)
}

// burst announces a takeover of ip, as long as ip stays answered here.
func (l *link) burst(ip netip.Addr) {
	defer l.wg.Done()

	t := time.NewTicker(l.r.opts.BurstInterval)
	defer t.Stop()

	for i := range l.r.opts.Burst {
		if i > 0 {
			select {
			case <-l.stop:
				return
			case <-t.C:
			}
		}

		if !l.has(ip) {
			return
		}

		l.announce(ip)
	}
}

func (l *link) refresh() {
	defer l.wg.Done()

	t := time.NewTicker(l.r.opts.Refresh)
	defer t.Stop()

	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}

		for ip := range *l.owned.Load() {
			l.announce(ip)
		}
	}
}

// close stops answering at once and waits for the link's goroutines.
func (l *link) close() {
	empty := map[netip.Addr]bool{}
	l.owned.Store(&empty)
	close(l.stop)

	for _, s := range []*packetSocket{l.arp.Load(), l.nd.Load()} {
		if s != nil {
			s.close() //nolint:errcheck // nothing to do about it
		}
	}

	if l.groups != nil {
		l.groups.close() //nolint:errcheck // closing drops the memberships
	}

	l.wg.Wait()

	l.log.Info("stopped answering on interface")
}
