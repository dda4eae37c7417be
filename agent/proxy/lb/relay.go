package lb

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// handle serves one client: reach an upstream, then relay until both sides are done.
func (p *Proxy) handle(client *net.TCPConn) {
	p.active.Add(1)
	p.total.Add(1)

	defer p.active.Add(-1)

	spec := p.spec.Load()

	u, server := p.connect(spec)
	if server == nil {
		p.refused.Add(1)
		// A reset, not a FIN: the client learns at once that nothing is
		// behind us, instead of reading an empty reply.
		client.SetLinger(0) //nolint:errcheck // best effort, it is closed next
		client.Close()      //nolint:errcheck

		return
	}

	u.active.Add(1)
	u.total.Add(1)

	c := &conn{client: client, server: server}
	u.conns.add(c)

	// The upstream leg gets its keepalive and user timeout only once the
	// connection has lived a while: most API connections are over sooner,
	// and four system calls are a tenth of what a short one costs. (The
	// client leg inherits them from the listener for free.)
	opts := time.AfterFunc(upstreamOptionsDelay, func() { c.upstreamOptions(sockOpts(spec)) })

	c.relay()

	opts.Stop()
	u.conns.remove(c)
	u.active.Add(-1)
}

// upstreamOptionsDelay is below the smallest keepalive and user timeout the
// configuration allows, so no connection lives long enough to miss them.
var upstreamOptionsDelay = 500 * time.Millisecond

func (c *conn) upstreamOptions(o socketOptions) {
	rc, err := c.server.SyscallConn()
	if err != nil {
		return // closed meanwhile: nothing left to protect
	}

	o.control("", "", rc) //nolint:errcheck // a socket closing under us refuses options; nothing to do then
}

// connect dials upstreams in pick order until one answers, within the
// connect budget; a failed upstream is ejected and the next one tried, so
// the client never notices while a healthy upstream exists.
func (p *Proxy) connect(spec *resourcepb.ProxyConfigSpec) (*upstream, *net.TCPConn) {
	deadline := time.Now().Add(spec.GetConnectTimeout().AsDuration())
	dialTimeout := spec.GetDialTimeout().AsDuration()
	leastConn := spec.GetBalance() == "least-connections"
	rr := p.rr.Add(1)

	var tried [maxAttempts]*upstream

	for n := range maxAttempts {
		u := p.table.Load().pick(tried[:n], rr, leastConn)
		if u == nil {
			return nil, nil
		}

		timeout := min(dialTimeout, time.Until(deadline))
		if timeout <= 0 {
			return nil, nil
		}

		if n > 0 {
			p.retries.Add(1)
		}

		tried[n] = u

		server, err := dial(u.addr, timeout)
		if err == nil {
			return u, server
		}

		u.failedDials.Add(1)
		p.failedDials.Add(1)

		if upstreamsFault(err, timeout == dialTimeout) {
			p.ejected(u, err)
		}
	}

	return nil, nil
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

func dial(addr string, timeout time.Duration) (*net.TCPConn, error) {
	// KeepAlive -1: Go's default keepalive would cost system calls on every
	// dial; handle sets ours on connections that last.
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}

	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}

	return c.(*net.TCPConn), nil //nolint:forcetypeassert,errcheck // "tcp" dials TCP
}

func listenTCP(addr string, opts socketOptions) (*net.TCPListener, error) {
	// KeepAlive -1: Go would otherwise set its own keepalive on every accepted socket.
	lc := net.ListenConfig{KeepAlive: -1, Control: opts.control}

	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}

	return ln.(*net.TCPListener), nil //nolint:forcetypeassert,errcheck // "tcp" listens with TCP
}

// conn is one relayed client and its upstream connection.
type conn struct {
	client, server *net.TCPConn
	wg             sync.WaitGroup
	ended          atomic.Int32 // directions that reached the end of their stream
}

// relay copies both ways until both directions ended. An end of stream is
// passed on as a half-close; an error (a reset, a drain) ends both ways.
func (c *conn) relay() {
	c.wg.Add(1)

	go func() {
		defer c.wg.Done()

		c.pipe(c.server, c.client)
	}()

	c.pipe(c.client, c.server)
	c.wg.Wait()

	c.client.Close() //nolint:errcheck // both are done
	c.server.Close() //nolint:errcheck
}

// pipe copies src to dst, then passes the end of stream on as a half-close.
func (c *conn) pipe(dst, src *net.TCPConn) {
	if err := copyStream(dst, src); err != nil {
		c.close()

		return
	}

	// The second direction to end skips the half-close: relay closes both
	// sockets next, which sends the same FIN for one system call less.
	if c.ended.Add(1) == 1 {
		dst.CloseWrite() //nolint:errcheck // the peer may be gone already; the other way finds out
	}
}

// connSet is the connections of one upstream, so a drain can end them.
type connSet struct {
	mu sync.Mutex
	m  map[*conn]struct{}
}

func (s *connSet) add(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.m == nil {
		s.m = map[*conn]struct{}{}
	}

	s.m[c] = struct{}{}
}

func (s *connSet) remove(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()

	delete(s.m, c)
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()

	for c := range s.m {
		c.close()
	}
}

// socketOptions are what both legs of every connection get: keepalive, so an
// idle connection to a vanished peer is noticed, and TCP_USER_TIMEOUT, so
// data stuck unacknowledged (a black-holed upstream) ends it too.
type socketOptions struct {
	keepalive   time.Duration
	userTimeout time.Duration
}

func sockOpts(spec *resourcepb.ProxyConfigSpec) socketOptions {
	return socketOptions{keepalive: spec.GetKeepalive().AsDuration(), userTimeout: spec.GetUserTimeout().AsDuration()}
}

func (o socketOptions) control(_, _ string, rc syscall.RawConn) error {
	var sockErr error

	if err := rc.Control(func(fd uintptr) { sockErr = o.apply(int(fd)) }); err != nil { //nolint:gosec // fds fit an int
		return err
	}

	return sockErr
}

func (o socketOptions) applyListener(ln *net.TCPListener) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return err
	}

	return o.control("", "", rc)
}

func (o socketOptions) apply(fd int) error {
	type opt struct{ level, name, value int }

	var opts []opt

	if o.keepalive > 0 {
		secs := max(int(o.keepalive/time.Second), 1)
		opts = append(opts,
			opt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			opt{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs},
			opt{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs},
		)
	}

	// With a user timeout the kernel ignores the keepalive probe count and
	// gives up once the timeout passed, which saves a system call per dial.
	if o.userTimeout > 0 {
		opts = append(opts, opt{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(o.userTimeout / time.Millisecond)})
	} else if o.keepalive > 0 {
		opts = append(opts, opt{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3})
	}

	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.name, o.value); err != nil {
			return err
		}
	}

	return nil
}
