package lb

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// params are what the data path needs of a spec, converted once per Update.
type params struct {
	connectTimeout time.Duration
	dialTimeout    time.Duration
	leastConn      bool
	opts           socketOptions
}

// handle takes a client accepted by l: it picks an upstream, starts the
// dial and hands both to l. A client with nowhere to go is reset at once.
// The caller holds l.mu.
func (p *Proxy) handle(l *loop, cfd int) {
	p.active.Add(1)
	p.total.Add(1)

	pr := p.params.Load()
	c := &conn{params: pr, fd: [2]int{cfd, -1}, rr: p.rr.Add(1), budget: now() + int64(pr.connectTimeout)}

	l.add(c)

	if err := l.watch(cfd, makeKey(c.slot, c.gen, 0, sideClient)); err != nil {
		p.logger.Warn("cannot watch a client socket")
		c.refuse()

		return
	}

	// The upstream leg gets its keepalive and user timeout only once the
	// connection has lived a while: most API connections are over sooner,
	// and four system calls are a tenth of what a short one costs. (The
	// client leg inherits them from the listener for free.)
	l.addTimer(timer{at: now() + int64(upstreamOptionsDelay), c: c, gen: c.gen, kind: timerOptions})

	c.dialNext()
}

// upstreamOptionsDelay is below the smallest keepalive and user timeout the
// configuration allows, so no connection lives long enough to miss them.
var upstreamOptionsDelay = 500 * time.Millisecond

func (c *conn) upstreamOptions() {
	c.optsDone = true

	if c.fd[sideUpstream] >= 0 {
		c.params.opts.apply(c.fd[sideUpstream]) //nolint:errcheck // a socket closing under us refuses options; nothing to do then
	}
}

// dialNext dials upstreams in pick order until one dial is under way,
// within the connect budget; a failed upstream is ejected and the next one
// tried, so the client never notices while a healthy upstream exists. With
// none left the client is reset.
func (c *conn) dialNext() {
	p := c.l.p

	for c.attempts < maxAttempts {
		u := p.table.Load().pick(c.tried[:c.attempts], c.rr, c.params.leastConn)
		if u == nil {
			break
		}

		left := time.Duration(c.budget - now())
		if left <= 0 {
			break
		}

		timeout := min(c.params.dialTimeout, left)

		if c.attempts > 0 {
			p.retries.Add(1)
		}

		c.tried[c.attempts] = u
		c.attempts++
		c.u, c.full, c.connecting, c.addrs = u, timeout == c.params.dialTimeout, true, nil

		c.l.addTimer(timer{at: now() + int64(timeout), c: c, gen: c.gen, attempt: uint8(c.attempts - 1), kind: timerDial}) //nolint:gosec // < maxAttempts

		if u.sa == nil {
			// A host name: resolving it must not hold the loop.
			go c.l.resolve(c, c.gen, c.attempts-1, u, timeout)

			return
		}

		if err := c.start(u.sa); err != nil {
			c.failed(err)

			continue
		}

		return
	}

	c.refuse()
}

// start begins the current attempt's dial to sa.
func (c *conn) start(sa *sockaddr) error {
	fd, err := sa.connect()
	if err != nil {
		return err
	}

	if c.optsDone {
		c.params.opts.apply(fd) //nolint:errcheck // as in upstreamOptions
	}

	c.fd[sideUpstream] = fd
	c.readable[sideUpstream], c.writable[sideUpstream], c.hup[sideUpstream] = false, false, false
	c.serial++

	if err := c.l.watch(fd, makeKey(c.slot, c.gen, c.serial, sideUpstream)); err != nil {
		rawClose(fd)
		c.fd[sideUpstream] = -1

		return err
	}

	return nil
}

// connected: the dial of the current attempt succeeded.
func (c *conn) connected() {
	c.connecting, c.relaying = false, true
	c.u.active.Add(1)
	c.u.total.Add(1)
}

// dialFailed ends the current dial with err and goes on with the host
// name's next address, or else the next upstream.
func (c *conn) dialFailed(err error) {
	if c.fd[sideUpstream] >= 0 {
		rawClose(c.fd[sideUpstream])
		c.fd[sideUpstream] = -1
	}

	for len(c.addrs) > 0 {
		next := c.addrs[0]
		c.addrs = c.addrs[1:]

		if c.start(newSockaddr(next)) == nil {
			return
		}
	}

	c.failed(err)
	c.dialNext()
}

func (c *conn) dialTimedOut(attempt int) {
	if !c.connecting || attempt != c.attempts-1 {
		return // that attempt is over
	}

	c.addrs = nil // the attempt's time is up for all of them
	c.dialFailed(os.ErrDeadlineExceeded)
}

// failed counts a failed dial of the current attempt against its upstream.
func (c *conn) failed(err error) {
	p, u := c.l.p, c.u

	u.failedDials.Add(1)
	p.failedDials.Add(1)

	err = &net.OpError{Op: "dial", Net: "tcp", Addr: dialAddr(u.addr), Err: err}

	if upstreamsFault(err, c.full) {
		p.ejected(u, err)
	}
}

// refuse resets the client: it learns at once that nothing is behind us,
// instead of reading an empty reply.
func (c *conn) refuse() {
	c.l.p.refused.Add(1)

	var linger unix.Linger // on, zero seconds: close sends a reset
	linger.Onoff = 1
	unix.SetsockoptLinger(c.fd[sideClient], unix.SOL_SOCKET, unix.SO_LINGER, &linger) //nolint:errcheck // best effort, it is closed next

	c.close()
}

// resolve looks a host name up for an attempt, then starts its dial.
func (l *loop) resolve(c *conn, gen uint32, attempt int, u *upstream, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var addrs []netip.AddrPort

	host, port, err := net.SplitHostPort(u.addr)
	if err == nil {
		var n int

		if n, err = strconv.Atoi(port); err == nil {
			var ips []netip.Addr

			ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			for _, ip := range ips {
				addrs = append(addrs, netip.AddrPortFrom(ip, uint16(n))) //nolint:gosec // a port
			}
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()

	if c.closed || c.gen != gen || !c.connecting || attempt != c.attempts-1 {
		return // timed out meanwhile, or the client left
	}

	if err != nil {
		c.failed(err)
		c.dialNext()

		return
	}

	c.addrs = addrs[1:]

	if err := c.start(newSockaddr(addrs[0])); err != nil {
		c.dialFailed(err)
	}
}

// upstreamsFault says whether a failed dial is evidence against the
// upstream. A refusal, a reset or an unreachable host is; a timeout is when
// the attempt had its whole dialTimeout; running out of file descriptors or
// local ports is this node's trouble, and ejecting every upstream for it
// would only turn it into an outage.
func upstreamsFault(err error, fullAttempt bool) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fullAttempt
	}

	for _, local := range []error{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.EADDRNOTAVAIL} {
		if errors.Is(err, local) {
			return false
		}
	}

	return true
}

// dialAddr names an upstream in errors like package net would.
type dialAddr string

func (a dialAddr) Network() string { return "tcp" }
func (a dialAddr) String() string  { return string(a) }
