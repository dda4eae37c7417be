package lb

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// listener is one listen address: a plain TCP listening socket of our own
// per relay loop, in one SO_REUSEPORT group, in that loop's epoll set. The
// kernel spreads clients over the loops, and a loop accepts in the same
// batch as it relays: no accept goroutine to wake per client, and no lock
// handed between it and the loop. Package net would also listen with MPTCP
// and wrap every accepted socket in a netFD, four system calls per client
// that the relay does not need.
//
// The group is open to sockets of the same user that ask for SO_REUSEPORT
// too; KubePrism's listener and package net's do not, so a port still held
// by KubePrism is reported as taken, as before.
//
// The proxy's lock guards a listener; its sockets stay open while it is held.
type listener struct {
	socks []acceptorRef
	addr  string // as bound, e.g. with the port the kernel chose
}

type acceptorRef struct {
	l   *loop
	fd  int
	idx int32
	gen uint32
}

// clientLegBuffer fixes the send and receive buffers of the client leg,
// which is loopback by construction: with a round trip of microseconds it
// needs far less than the megabytes autotuning grows to during a bulk
// transfer, and the bytes parked there only go cold in the cache (bulk
// through the proxy: +7–13 % GB/s, the client's own CPU per GB −20 %). The
// kernel doubles it, and caps the request at net.core.[rw]mem_max. The
// upstream leg, which may cross a network, keeps autotuning.
const clientLegBuffer = 512 << 10

// listenTCP binds addr once per loop and hands each socket to its loop.
func listenTCP(addr string, opts socketOptions, loops []*loop) (*listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: want ip:port: %w", addr, err)
	}

	ln := &listener{}

	for _, l := range loops {
		fd, bound, err := listenSocket(ap, opts, len(loops) > 1)
		if err != nil {
			ln.close()

			return nil, err
		}

		idx, gen, err := l.addAcceptor(fd, bound.String())
		if err != nil {
			rawClose(fd)
			ln.close()

			return nil, fmt.Errorf("listen %s: %w", bound, err)
		}

		// The others join the port the first one got.
		ap = bound
		ln.socks = append(ln.socks, acceptorRef{l: l, fd: fd, idx: idx, gen: gen})
	}

	ln.addr = ap.String()

	return ln, nil
}

func listenSocket(ap netip.AddrPort, opts socketOptions, reusePort bool) (int, netip.AddrPort, error) {
	fail := func(call string, err error) (int, netip.AddrPort, error) {
		return -1, ap, &net.OpError{Op: "listen", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError(call, err)}
	}

	family := unix.AF_INET
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family = unix.AF_INET6
	}

	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket", err)
	}

	type option struct{ level, name, value int }

	// Accepted sockets inherit TCP_NODELAY, keepalive, the user timeout and
	// the buffer sizes from the listener, which saves the data path their
	// system calls.
	setup := []option{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1},
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{unix.SOL_SOCKET, unix.SO_SNDBUF, clientLegBuffer},
		{unix.SOL_SOCKET, unix.SO_RCVBUF, clientLegBuffer},
	}
	if reusePort {
		setup = append(setup, option{unix.SOL_SOCKET, unix.SO_REUSEPORT, 1})
	}

	if family == unix.AF_INET6 {
		setup = append(setup, option{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1})
	}

	for _, o := range setup {
		if err := unix.SetsockoptInt(fd, o.level, o.name, o.value); err != nil {
			unix.Close(fd) //nolint:errcheck

			return fail("setsockopt", err)
		}
	}

	if err := opts.apply(fd); err != nil {
		unix.Close(fd) //nolint:errcheck

		return fail("setsockopt", err)
	}

	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}

	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd) //nolint:errcheck

		return fail("bind", err)
	}

	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		unix.Close(fd) //nolint:errcheck

		return fail("listen", err)
	}

	bound, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd) //nolint:errcheck

		return fail("getsockname", err)
	}

	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		ap = netip.AddrPortFrom(netip.AddrFrom4(b.Addr), uint16(b.Port)) //nolint:gosec // ports fit
	case *unix.SockaddrInet6:
		ap = netip.AddrPortFrom(netip.AddrFrom16(b.Addr), uint16(b.Port)) //nolint:gosec
	}

	return fd, ap, nil
}

func (ln *listener) setOptions(opts socketOptions) error {
	for _, a := range ln.socks {
		if err := opts.apply(a.fd); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}

	return nil
}

func (ln *listener) close() {
	for _, a := range ln.socks {
		a.l.removeAcceptor(a.idx, a.gen)
	}
}

// A loop's listening sockets have a lock of their own, taken by nothing
// else while it is held: the proxy adds and closes them under its lock,
// which the loop takes while it relays (to eject an upstream).
type acceptor struct {
	fd   int // -1: a free entry
	gen  uint32
	addr string
}

// acceptBatch is how many clients are accepted before they are handled.
const acceptBatch = 32

// acceptRetry is how soon a loop tries again after accept failed for want
// of file descriptors or memory: edge-triggered, nothing would remind it.
const acceptRetry = 50 * time.Millisecond

func (l *loop) addAcceptor(fd int, addr string) (int32, uint32, error) {
	l.acceptMu.Lock()
	defer l.acceptMu.Unlock()

	i := slices.IndexFunc(l.acceptors, func(a acceptor) bool { return a.fd < 0 })
	if i < 0 {
		i = len(l.acceptors)
		l.acceptors = append(l.acceptors, acceptor{})
	}

	a := &l.acceptors[i]
	a.fd, a.gen, a.addr = fd, (a.gen+1)&genMask, addr

	idx := int32(i) //nolint:gosec // a few listeners
	if err := l.ctl(fd, unix.EPOLLIN|unix.EPOLLET, makeKey(acceptorSlot(idx), a.gen, 0, 0)); err != nil {
		a.fd = -1

		return 0, 0, err
	}

	return idx, a.gen, nil
}

// removeAcceptor closes the socket, which also takes it out of the epoll set.
func (l *loop) removeAcceptor(idx int32, gen uint32) {
	l.acceptMu.Lock()
	defer l.acceptMu.Unlock()

	if a := &l.acceptors[idx]; a.gen == gen && a.fd >= 0 {
		rawClose(a.fd)
		a.fd = -1
	}
}

// Acceptors' keys have negative slots, connections' are from 0 up.
func acceptorSlot(idx int32) int32 { return -1 - idx }

// accept handles the clients waiting on acceptor idx, until none is left.
// The caller holds mu.
func (l *loop) accept(idx int32, gen uint32) {
	var fds [acceptBatch]int

	for {
		n, errno, addr := l.acceptSome(idx, gen, fds[:])
		for _, fd := range fds[:n] {
			l.p.handle(l, fd)
		}

		if errno != 0 {
			// Out of file descriptors and the like: the clients wait in the backlog.
			l.p.logger.Warn("accept failed", zap.String("listener", addr), zap.Error(os.NewSyscallError("accept4", errno)))
			l.addTimer(timer{at: now() + int64(acceptRetry), acceptor: idx, gen: gen, kind: timerAccept})

			return
		}

		if n < len(fds) {
			return
		}
	}
}

// acceptSome accepts up to len(fds) clients; fewer when none is left or
// accept failed (errno).
func (l *loop) acceptSome(idx int32, gen uint32, fds []int) (int, unix.Errno, string) {
	l.acceptMu.Lock()
	defer l.acceptMu.Unlock()

	if int(idx) >= len(l.acceptors) {
		return 0, 0, ""
	}

	a := l.acceptors[idx]
	if a.gen != gen || a.fd < 0 {
		return 0, 0, "" // closed earlier
	}

	n := 0
	for n < len(fds) {
		cfd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(a.fd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0) //nolint:gosec // fds fit

		switch errno {
		case 0:
			fds[n] = int(cfd) //nolint:gosec // fds fit
			n++
		case unix.EINTR, unix.ECONNABORTED:
		case unix.EAGAIN:
			return n, 0, a.addr
		default:
			return n, errno, a.addr
		}
	}

	return n, 0, a.addr
}
