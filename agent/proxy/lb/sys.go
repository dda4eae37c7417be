package lb

import (
	"net"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The data path works on raw non-blocking sockets. Calls on them never
// block, so they skip the runtime's system call bookkeeping: with it, a
// write that spends a few tens of µs delivering to a loopback peer lets the
// runtime hand this thread's work to another thread, a context switch per
// message. They also skip what package net adds to every connection
// (getsockname, getpeername, SO_ERROR, TCP_NODELAY, an epoll_ctl each way).

func rawIO(trap uintptr, fd int, p []byte) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p))) //nolint:gosec // fds are small

	return int(n), errno //nolint:gosec // at most len(p)
}

func rawSplice(from, to, n int) (int, unix.Errno) {
	moved, _, errno := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(from), 0, uintptr(to), 0, uintptr(n), unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE) //nolint:gosec

	return int(moved), errno //nolint:gosec // at most n
}

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) //nolint:errcheck,gosec // nothing to do about a failed close
}

func rawShutdownWrite(fd int) {
	unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0) //nolint:errcheck,gosec // the peer may be gone; the other way finds out
}

func setsockoptInt(fd, level, name, value int) unix.Errno {
	v := int32(value)                                                                                                                   //nolint:gosec // small option values
	_, _, errno := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(unsafe.Pointer(&v)), 4, 0) //nolint:gosec

	return errno
}

// sockaddr is a socket address in the kernel's layout, built once per
// upstream so that a dial neither parses nor allocates.
type sockaddr struct {
	family int
	raw    [unix.SizeofSockaddrInet6]byte
	len    uintptr
}

func newSockaddr(ap netip.AddrPort) *sockaddr {
	sa := &sockaddr{}
	port := ap.Port()

	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		sa.family, sa.len = unix.AF_INET, unix.SizeofSockaddrInet4
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		in.Family = unix.AF_INET
		setPort(&in.Port, port)
		in.Addr = ap.Addr().Unmap().As4()

		return sa
	}

	sa.family, sa.len = unix.AF_INET6, unix.SizeofSockaddrInet6
	in := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa.raw))
	in.Family = unix.AF_INET6
	setPort(&in.Port, port)
	in.Addr = ap.Addr().As16()

	if zone := ap.Addr().Zone(); zone != "" {
		if ifi, err := net.InterfaceByName(zone); err == nil {
			in.Scope_id = uint32(ifi.Index) //nolint:gosec // interface indexes are small
		}
	}

	return sa
}

// setPort stores port in network byte order, whatever the host's.
func setPort(field *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(field))
	b[0], b[1] = byte(port>>8), byte(port)
}

// connect starts a non-blocking connection to sa. It returns the socket
// once the attempt is under way; the outcome arrives as an epoll event.
func (sa *sockaddr) connect() (int, error) {
	fd, _, errno := unix.RawSyscall(unix.SYS_SOCKET, uintptr(sa.family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0) //nolint:gosec
	if errno != 0 {
		return -1, os.NewSyscallError("socket", errno)
	}

	// Relayed messages must leave as they come: Nagle would hold a small
	// write behind an unacknowledged one (an HTTP/2 frame behind the last).
	if errno := setsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); errno != 0 { //nolint:gosec
		rawClose(int(fd)) //nolint:gosec

		return -1, os.NewSyscallError("setsockopt", errno)
	}

	_, _, errno = unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa.raw)), sa.len)
	if errno != 0 && errno != unix.EINPROGRESS {
		rawClose(int(fd)) //nolint:gosec

		return -1, os.NewSyscallError("connect", errno)
	}

	return int(fd), nil //nolint:gosec
}

// sockError is what a failed non-blocking connect left on its socket.
func sockError(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}

	if v == 0 {
		v = int(unix.ECONNRESET) // a hang-up without an error
	}

	return os.NewSyscallError("connect", unix.Errno(v)) //nolint:gosec // errnos are small
}

// pipe is the kernel buffer a spliced stream moves through.
type pipe struct {
	r, w int
}

// pipeSize is asked of the kernel for every pipe (the default maximum an
// unprivileged process may ask); one splice moves at most that much.
const pipeSize = 1 << 20

func newPipe() (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}

	// A smaller pipe works too, with more splices.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize) //nolint:errcheck,gosec

	return &pipe{r: fds[0], w: fds[1]}, nil
}

func (p *pipe) close() {
	rawClose(p.r)
	rawClose(p.w)
}
