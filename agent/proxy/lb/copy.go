package lb

import (
	"cmp"
	"io"
	"net"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// close ends both directions now. The deadlines come first: they wake any
// goroutine blocked on either socket, where Close alone would wait for a
// copy that is blocked writing to the other socket.
func (c *conn) close() {
	past := time.Unix(1, 0)

	c.client.SetDeadline(past) //nolint:errcheck // best effort; Close follows
	c.server.SetDeadline(past) //nolint:errcheck
	c.client.Close()           //nolint:errcheck
	c.server.Close()           //nolint:errcheck
}

// Buffers are lent per read, never held by an idle connection: thousands of
// idle watches cost no memory beyond their sockets.
const bufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// spliceChunk is how much a bulk stream moves by splice before it goes back
// to reading, which frees the pipe again.
const spliceChunk = 4 << 20

// copyStream copies until src ends. Small writes (API requests, watch
// events) go through a pooled buffer: read and write cost less than
// splice's two trips through a pipe. A read that fills the buffer marks a
// bulk transfer, which then moves by splice(2) without entering user space.
func copyStream(dst, src *net.TCPConn) error {
	rc, err := src.SyscallConn()
	if err != nil {
		return err
	}

	wrc, err := dst.SyscallConn()
	if err != nil {
		return err
	}

	var (
		drained bool  // the last read was short: wait before reading again
		bulk    bool  // the last read filled the buffer
		cerr    error // what ended the copy, nil at the end of the stream
		done    bool

		out      []byte // what is still to be written
		writeErr error
	)

	// writeOut runs inside RawWrite, which waits for writability whenever it returns false.
	writeOut := func(fd uintptr) bool {
		for len(out) > 0 {
			n, err := rawIO(unix.SYS_WRITE, fd, out)

			switch err {
			case nil:
				out = out[n:]
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				writeErr = err

				return true
			}
		}

		return true
	}

	// copyReads runs inside RawRead, which waits for readability whenever it
	// returns false. Waiting right after a short read, instead of reading
	// until EAGAIN, saves a system call per message: the poller remembers
	// any data that arrived since the read.
	copyReads := func(fd uintptr) bool {
		for {
			if drained {
				drained = false

				return false
			}

			buf := bufPool.Get().(*[bufSize]byte) //nolint:forcetypeassert,errcheck // the pool holds nothing else

			n, err := rawIO(unix.SYS_READ, fd, buf[:])

			switch {
			case err == unix.EINTR:
				bufPool.Put(buf)

				continue
			case err == unix.EAGAIN:
				bufPool.Put(buf)

				return false
			case err != nil || n == 0:
				bufPool.Put(buf)

				cerr, done = err, true

				return true
			}

			out, writeErr = buf[:n], nil
			err = wrc.Write(writeOut)

			bufPool.Put(buf)

			if err = cmp.Or(err, writeErr); err != nil {
				cerr, done = err, true

				return true
			}

			if n == bufSize {
				bulk = true

				return true
			}

			drained = true
		}
	}

	for {
		if err := rc.Read(copyReads); err != nil {
			return err
		}

		if done {
			return cerr
		}

		if bulk {
			bulk = false

			// ReadFrom between TCP sockets is splice(2).
			lr := &io.LimitedReader{R: src, N: spliceChunk}
			if _, err := dst.ReadFrom(lr); err != nil {
				return err
			}

			if lr.N > 0 {
				return nil // src ended before the chunk did
			}
		}
	}
}

// rawIO reads or writes a non-blocking socket. Such a call never blocks, so
// it skips the runtime's system call bookkeeping: with it, a write that
// spends a few tens of µs delivering to a loopback peer lets the runtime hand
// this thread's work to another thread, a context switch per message.
func rawIO(trap uintptr, fd uintptr, p []byte) (int, error) {
	n, _, errno := unix.RawSyscall(trap, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}

	return int(n), nil //nolint:gosec // at most len(p)
}
