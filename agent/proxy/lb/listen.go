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

// listener is a plain TCP listening socket of our own: package net would
// listen with MPTCP and wrap every accepted socket in a netFD, which costs
// four system calls per client that the relay does not need.
type listener struct {
	file *os.File // in Go's poller, so the accept loop waits without a thread
	addr string   // as bound, e.g. with the port the kernel chose
}

func listenTCP(addr string, opts socketOptions) (*listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: want ip:port: %w", addr, err)
	}

	fail := func(call string, err error) (*listener, error) {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError(call, err)}
	}

	family := unix.AF_INET
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family = unix.AF_INET6
	}

	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket", err)
	}

	// Accepted sockets inherit TCP_NODELAY, keepalive and the user timeout
	// from the listener, which saves the data path their system calls.
	setup := []struct{ level, name, value int }{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1},
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	}
	if family == unix.AF_INET6 {
		setup = append(setup, struct{ level, name, value int }{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1})
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
		addr = netip.AddrPortFrom(netip.AddrFrom4(b.Addr), uint16(b.Port)).String() //nolint:gosec // ports fit
	case *unix.SockaddrInet6:
		addr = netip.AddrPortFrom(netip.AddrFrom16(b.Addr), uint16(b.Port)).String() //nolint:gosec
	}

	return &listener{file: os.NewFile(uintptr(fd), addr), addr: addr}, nil //nolint:gosec // fds fit
}

func (ln *listener) setOptions(opts socketOptions) error {
	rc, err := ln.file.SyscallConn()
	if err != nil {
		return err
	}

	return opts.control("", "", rc)
}

func (ln *listener) close() {
	ln.file.Close() //nolint:errcheck // the accept loop's error is expected
}

// serve accepts clients until the listener is closed, every waiting client
// at each wake-up.
func (p *Proxy) serve(ln *listener) {
	rc, err := ln.file.SyscallConn()
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
					p.handle(int(cfd)) //nolint:gosec // fds fit
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
