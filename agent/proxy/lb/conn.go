package lb

import (
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// conn is one relayed client and its upstream connection. All of it
// belongs to its loop and is guarded by the loop's mutex.
type conn struct {
	l    *loop
	slot int32
	gen  uint32

	params *params
	fd     [2]int // client, upstream; -1 when there is none
	u      *upstream

	connecting bool // fd[server] is a dial in progress
	relaying   bool // the dial succeeded: counted as one of u's connections
	closed     bool
	optsDone   bool // the upstream leg has its keepalive and user timeout

	// Dial attempts: the upstreams tried so far, and the connect budget.
	tried    [maxAttempts]*upstream
	attempts int
	rr       uint64
	budget   int64 // monotonic ns by which a dial must have succeeded
	full     bool  // the current attempt has its whole dial timeout
	serial   uint8 // of the upstream socket, which each dial replaces
	// The host name's other addresses, for the current attempt: like
	// package net's dialer, it fails only once every address did.
	addrs []netip.AddrPort

	// Edge-triggered readiness of each socket, as the last events left it.
	readable, writable, hup [2]bool

	dir [2]stream // client to upstream, upstream to client
}

// The sides of a conn, as indexes of fd.
const (
	sideClient   = 0
	sideUpstream = 1
)

// stream is one direction of a conn: bytes read from fd[from] that wait to
// be written to the other socket.
type stream struct {
	buf    *[bufSize]byte // lent for one read, held only while out is unwritten
	out    []byte
	pipe   *pipe // while the stream moves in bulk
	inPipe int
	ended  bool // the source reached its end of stream
	passed bool // the end was passed on
	// The last splice was short: once the pipe is written out the stream
	// leaves bulk mode, so an idle connection holds no pipe.
	leaveBulk bool
}

// Buffers are lent per read, never held by an idle connection: thousands of
// idle watches cost no memory beyond their sockets.
const bufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// event takes one epoll event for side's socket.
func (c *conn) event(side int, serial uint8, events uint32) {
	if side == sideUpstream && serial != c.serial&7 {
		return // an earlier upstream socket, closed earlier in the batch
	}

	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.readable[side] = true
	}

	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.hup[side] = true
	}

	if events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.writable[side] = true
	}

	if c.connecting {
		if side != sideUpstream {
			return // the client waits until its upstream is there
		}

		if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			c.dialFailed(sockError(c.fd[sideUpstream]))

			return
		}

		if events&unix.EPOLLOUT == 0 {
			return
		}

		c.connected()
	}

	c.pump()
}

// pump moves what it can both ways.
func (c *conn) pump() {
	if c.relay(sideClient, sideUpstream) {
		c.relay(sideUpstream, sideClient)
	}
}

// relay moves bytes from fd[from] to fd[to] until one of them would block.
// Small messages go through a pooled buffer: read and write cost less than
// splice's two trips through a pipe. A read that fills the buffer marks a
// bulk transfer, which then moves by splice(2) without entering user space.
// It returns false when the connection ended.
func (c *conn) relay(from, to int) bool {
	s := &c.dir[from]

	for {
		// What was read goes out first.
		if !c.flush(s, to) {
			return !c.closed
		}

		if s.ended {
			if !s.passed {
				c.pass(s, from, to)
			}

			return !c.closed
		}

		if !c.readable[from] {
			return true
		}

		if s.pipe != nil {
			if !c.fillPipe(s, from) {
				return false
			}

			continue
		}

		buf := bufPool.Get().(*[bufSize]byte) //nolint:forcetypeassert,errcheck // the pool holds nothing else

		n, errno := rawIO(unix.SYS_READ, c.fd[from], buf[:])

		switch {
		case errno == unix.EINTR:
			bufPool.Put(buf)

			continue
		case errno == unix.EAGAIN:
			bufPool.Put(buf)
			c.readable[from] = false

			return true
		case errno != 0:
			bufPool.Put(buf)
			c.close()

			return false
		case n == 0:
			bufPool.Put(buf)
			s.ended = true

			continue
		}

		s.buf, s.out = buf, buf[:n]

		switch {
		case n == bufSize:
			// A bulk transfer: the rest goes by splice, if a pipe is to be had.
			if p, err := c.l.getPipe(); err == nil {
				s.pipe = p
			}
		case !c.hup[from]:
			// A short read emptied the socket. Waiting for the next edge
			// instead of reading until EAGAIN saves a system call per
			// message. (After a hang-up no edge may come: read on.)
			c.readable[from] = false
		}
	}
}

// flush writes out what s holds; false when it must wait (or the connection ended).
func (c *conn) flush(s *stream, to int) bool {
	for len(s.out) > 0 {
		if !c.writable[to] {
			return false
		}

		n, errno := rawIO(unix.SYS_WRITE, c.fd[to], s.out)
		if !c.wrote(to, errno) {
			return false
		}

		if errno == 0 {
			s.out = s.out[n:]
		}
	}

	if s.buf != nil {
		bufPool.Put(s.buf)
		s.buf = nil
	}

	for s.inPipe > 0 {
		if !c.writable[to] {
			return false
		}

		n, errno := rawSplice(s.pipe.r, c.fd[to], s.inPipe)
		if !c.wrote(to, errno) {
			return false
		}

		if errno == 0 {
			s.inPipe -= n
		}
	}

	if s.leaveBulk {
		c.l.putPipe(s.pipe)
		s.pipe, s.leaveBulk = nil, false
	}

	return true
}

// wrote takes the outcome of one write or splice to fd[to]: false when the
// stream must wait for the socket to drain (or the connection ended).
func (c *conn) wrote(to int, errno unix.Errno) bool {
	switch errno {
	case 0, unix.EINTR:
		return true
	case unix.EAGAIN:
		c.writable[to] = false
	default:
		c.close()
	}

	return false
}

// fillPipe splices what fd[from] holds into the (empty) pipe. Unlike a
// short read, a short splice does not prove the socket empty (the pipe may
// have run out of slots first), so it reads on until EAGAIN. The stream
// keeps its pipe while it waits, as a splice blocked in package net would;
// a splice smaller than the buffer hands the pipe back once written out.
func (c *conn) fillPipe(s *stream, from int) bool {
	n, errno := rawSplice(c.fd[from], s.pipe.w, pipeSize)

	switch {
	case errno == unix.EINTR:
	case errno == unix.EAGAIN:
		c.readable[from] = false
	case errno != 0:
		c.close()

		return false
	case n == 0:
		s.ended = true
	default:
		s.inPipe = n
		s.leaveBulk = n < bufSize
	}

	return true
}

// pass sends the end of s's stream on as a half-close. The second
// direction to end closes the connection instead: the close sends the same
// FIN for one system call less.
func (c *conn) pass(s *stream, from, to int) {
	s.passed = true

	if c.dir[to].passed {
		c.close()

		return
	}

	rawShutdownWrite(c.fd[to])
}

// close ends both directions now.
func (c *conn) close() {
	if c.closed {
		return
	}

	c.closed = true

	for i := range c.fd {
		if c.fd[i] >= 0 {
			rawClose(c.fd[i]) // also leaves the epoll set
			c.fd[i] = -1
		}
	}

	for i := range c.dir {
		s := &c.dir[i]

		if s.buf != nil {
			bufPool.Put(s.buf)
			s.buf, s.out = nil, nil
		}

		if s.pipe != nil {
			if s.inPipe == 0 {
				c.l.putPipe(s.pipe)
			} else {
				s.pipe.close()
			}

			s.pipe = nil
		}
	}

	if c.relaying {
		c.u.active.Add(-1)
	}

	c.l.p.active.Add(-1)
	c.l.release(c)

	if c.l.closing && c.l.live == 0 {
		c.l.wake()
	}
}
