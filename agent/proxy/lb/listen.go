package lb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// listener is one listen address: a plain TCP listening socket of our own
// per relay loop, in one SO_REUSEPORT group. Package net would listen with
// MPTCP and wrap every accepted socket in a netFD, which costs four system
// calls per client that the relay does not need. With a socket per loop the
// kernel spreads clients over the loops, and each loop's accept loop hands
// its clients to its own loop.
//
// The group is open to sockets of the same user that ask for SO_REUSEPORT
// too; KubePrism's listener and package net's do not, so a port still held
// by KubePrism is reported as taken, as before.
type listener struct {
	files []*os.File // in Go's poller, so the accept loops wait without a thread
	addr  string     // as bound, e.g. with the port the kernel chose
}

// clientLegBuffer fixes the send and receive buffers of the client leg,
// which is loopback by construction: with a round trip of microseconds it
// needs far less than the megabytes autotuning grows to during a bulk
// transfer, and the bytes parked there only go cold in the cache (bulk
// through the proxy: +7–13 % GB/s, the client's own CPU per GB −20 %). The
// kernel doubles it, and caps the request at net.core.[rw]mem_max. The
// upstream leg, which may cross a network, keeps autotuning.
const clientLegBuffer = 512 << 10

func listenTCP(addr string, opts socketOptions, n int) (*listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: want ip:port: %w", addr, err)
	}

	ln := &listener{}

	for range n {
		f, bound, err := listenSocket(ap, opts, n > 1)
		if err != nil {
			ln.close()

			return nil, err
		}

		// The others join the port the first one got.
		ap = bound
		ln.files = append(ln.files, f)
	}

	ln.addr = ap.String()

	return ln, nil
}

func listenSocket(ap netip.AddrPort, opts socketOptions, reusePort bool) (*os.File, netip.AddrPort, error) {
	fail := func(call string, err error) (*os.File, netip.AddrPort, error) {
		return nil, ap, &net.OpError{Op: "listen", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError(call, err)}
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

	return os.NewFile(uintptr(fd), ap.String()), ap, nil //nolint:gosec // fds fit
}

func (ln *listener) setOptions(opts socketOptions) error {
	for _, f := range ln.files {
		rc, err := f.SyscallConn()
		if err != nil {
			return err
		}

		if err := opts.control("", "", rc); err != nil {
			return err
		}
	}

	return nil
}

func (ln *listener) close() {
	for _, f := range ln.files {
		f.Close() //nolint:errcheck // the accept loop's error is expected
	}
}

// serve accepts clients on the listener's i-th socket, for the i-th loop,
// until the listener is closed, every waiting client at each wake-up.
func (p *Proxy) serve(ln *listener, i int) {
	rc, err := ln.files[i].SyscallConn()
	if err != nil {
		return
	}

	for {
		var failed unix.Errno

		err := rc.Read(func(fd uintptr) bool {
			for {
				cfd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, fd, 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)

				switch errno {
				case 0:
					p.handle(p.loops[i], int(cfd)) //nolint:gosec // fds fit
				case unix.EINTR, unix.ECONNABORTED:
				case unix.EAGAIN:
					return false
				default:
					failed = errno

					return true
				}
			}
		})
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				p.logger.Warn("accept loop ended", zap.String("listener", ln.addr), zap.Error(err))
			}

			return
		}

		// Out of file descriptors and the like: wait a little rather than spin.
		p.logger.Warn("accept failed", zap.String("listener", ln.addr), zap.Error(os.NewSyscallError("accept4", failed)))
		time.Sleep(50 * time.Millisecond)
	}
}
