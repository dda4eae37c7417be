package lb

import (
	"errors"
	"os"
	"sync"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// A loop relays the connections given to it, like one HAProxy thread: one
// epoll set, edge-triggered, and one goroutine that handles whatever is
// ready in a batch. Compared with two goroutines per connection on Go's
// poller this saves, per connection, the goroutines, their stacks, the
// poller's bookkeeping and six system calls, and per message a goroutine
// switch.
//
// The loop's goroutine parks in Go's poller on the epoll descriptor
// itself, so a loop with nothing to do holds no thread. Its timers (dial
// timeouts, late socket options) are the read deadline of that descriptor.
type loop struct {
	p    *Proxy
	epfd int
	file *os.File // epfd, registered with Go's poller

	mu      sync.Mutex // everything below; held while a batch is handled
	slots   []slot
	free    []int32
	live    int
	timers  timerHeap
	armed   int64 // deadline set on file, monotonic ns; 0: none
	woken   bool  // the deadline is in the past: run goes round
	pipes   []*pipe
	closing bool // the proxy closed: end once the last connection did
	evs     [128]unix.EpollEvent

	acceptMu  sync.Mutex
	acceptors []acceptor
}

type slot struct {
	c   *conn
	gen uint32
}

// maxIdlePipes bounds the pipes a loop keeps for the next bulk stream.
const maxIdlePipes = 32

// timerSlack lets one wake-up serve the timers due within it.
const timerSlack = 10 * time.Millisecond

var epoch = time.Now()

// now is monotonic nanoseconds since the package started.
func now() int64 { return int64(time.Since(epoch)) }

func newLoop(p *Proxy) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}

	// Go's poller takes only non-blocking descriptors.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd) //nolint:errcheck

		return nil, os.NewSyscallError("fcntl", err)
	}

	return &loop{p: p, epfd: epfd, file: os.NewFile(uintptr(epfd), "epoll")}, nil //nolint:gosec // fds fit
}

// run handles events until the proxy is closed and the last connection ended.
func (l *loop) run() {
	rc, err := l.file.SyscallConn()
	if err != nil {
		l.p.logger.Error("relay loop cannot start", zap.Error(err))

		return
	}

	for {
		err := rc.Read(l.poll)

		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
		case err != nil:
			l.p.logger.Error("relay loop ended", zap.Error(err))

			return
		}

		l.mu.Lock()

		l.file.SetReadDeadline(time.Time{}) //nolint:errcheck // ours, open
		l.armed, l.woken = 0, false
		l.expire(now())

		done := l.closing && l.live == 0
		if done {
			for _, p := range l.pipes {
				p.close()
			}

			l.pipes = nil
		} else {
			l.rearm()
		}

		l.mu.Unlock()

		if done {
			l.file.Close() //nolint:errcheck

			return
		}
	}
}

// poll runs inside RawRead: it handles ready events until there are none,
// then returns false to park until the epoll descriptor is readable again.
// A batch shorter than the buffer took every ready event, and the epoll set
// is edge-triggered, so nothing is left behind when it parks.
func (l *loop) poll(fd uintptr) bool {
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&l.evs[0])), uintptr(len(l.evs)), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}

		if errno != 0 {
			l.p.logger.Error("epoll_wait failed", zap.Error(errno))

			return false
		}

		l.mu.Lock()

		for i := range int(n) { //nolint:gosec // at most len(l.evs)
			ev := &l.evs[i]
			k := key{slot: ev.Fd, tag: uint32(ev.Pad)} //nolint:gosec // bits

			if k.slot < 0 {
				l.accept(-1-k.slot, k.gen())

				continue
			}

			if c := l.lookup(k); c != nil {
				c.event(k.side(), k.serial(), ev.Events)
			}
		}

		if len(l.timers) > 0 {
			l.expire(now())
			l.rearm()
		}

		l.mu.Unlock()

		if int(n) < len(l.evs) { //nolint:gosec
			return false
		}
	}
}

// key is what epoll hands back with an event: the connection's slot, and a
// tag of its generation (a reused slot is a new connection), the serial of
// its upstream socket (a retried dial replaces it) and the side.
type key struct {
	slot int32
	tag  uint32
}

func makeKey(slot int32, gen uint32, serial uint8, side int) key {
	return key{slot: slot, tag: gen<<4 | uint32(serial&7)<<1 | uint32(side&1)} //nolint:gosec // bits
}

func (k key) gen() uint32   { return k.tag >> 4 }
func (k key) serial() uint8 { return uint8(k.tag>>1) & 7 } //nolint:gosec // bits
func (k key) side() int     { return int(k.tag & 1) }

// generations wrap within the 28 bits a key has for them.
const genMask = 1<<28 - 1

func (l *loop) lookup(k key) *conn {
	if k.slot < 0 || int(k.slot) >= len(l.slots) {
		return nil
	}

	s := l.slots[k.slot]
	if s.c == nil || s.gen != k.gen() {
		return nil // an event of a connection that ended earlier in the batch
	}

	return s.c
}

// add gives c a slot. The caller holds mu.
func (l *loop) add(c *conn) {
	var i int32

	if n := len(l.free); n > 0 {
		i = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		i = int32(len(l.slots)) //nolint:gosec // bounded by open files
		l.slots = append(l.slots, slot{})
	}

	s := &l.slots[i]
	s.gen = (s.gen + 1) & genMask
	s.c = c

	c.l, c.slot, c.gen = l, i, s.gen
	l.live++
}

func (l *loop) release(c *conn) {
	l.slots[c.slot].c = nil
	l.free = append(l.free, c.slot)
	l.live--
}

// watch adds a connection's socket to the epoll set for reading and
// writing, edge-triggered.
func (l *loop) watch(fd int, k key) error {
	return l.ctl(fd, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET, k)
}

func (l *loop) ctl(fd int, events uint32, k key) error {
	ev := unix.EpollEvent{Events: events, Fd: k.slot, Pad: int32(k.tag)} //nolint:gosec // bits

	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}

	return nil
}

func (l *loop) getPipe() (*pipe, error) {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]

		return p, nil
	}

	return newPipe()
}

// putPipe keeps an empty pipe for the next bulk stream.
func (l *loop) putPipe(p *pipe) {
	if len(l.pipes) < maxIdlePipes && !l.closing {
		l.pipes = append(l.pipes, p)

		return
	}

	p.close()
}

// wake makes run go round once, e.g. to notice closing. The caller holds mu.
func (l *loop) wake() {
	l.woken = true
	l.file.SetReadDeadline(time.Unix(1, 0)) //nolint:errcheck // a closed loop needs no waking
}

// Timers: dial deadlines, the upstream leg's late socket options and
// accepts to try again. They
// are few per connection and most have nothing left to do when they expire
// (the dial succeeded long before), so they stay in the heap until then.

type timerKind uint8

const (
	timerDial timerKind = iota
	timerOptions
	timerAccept
)

type timer struct {
	at       int64
	c        *conn // of dial and options timers
	acceptor int32 // of accept timers
	gen      uint32
	attempt  uint8
	kind     timerKind
}

type timerHeap []timer

func (h *timerHeap) push(t timer) {
	*h = append(*h, t)
	s := *h

	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if s[parent].at <= s[i].at {
			break
		}

		s[parent], s[i] = s[i], s[parent]
		i = parent
	}
}

func (h *timerHeap) pop() timer {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = timer{}
	s = s[:last]

	for i := 0; ; {
		least, left, right := i, 2*i+1, 2*i+2
		if left < len(s) && s[left].at < s[least].at {
			least = left
		}

		if right < len(s) && s[right].at < s[least].at {
			least = right
		}

		if least == i {
			break
		}

		s[i], s[least] = s[least], s[i]
		i = least
	}

	*h = s

	return top
}

func (l *loop) addTimer(t timer) {
	l.timers.push(t)

	if l.armed == 0 || t.at+int64(timerSlack) < l.armed {
		l.rearm()
	}
}

// expire runs the timers due at t.
func (l *loop) expire(t int64) {
	for len(l.timers) > 0 && l.timers[0].at <= t {
		tm := l.timers.pop()
		if tm.kind == timerAccept {
			l.accept(tm.acceptor, tm.gen)

			continue
		}

		if tm.c.gen != tm.gen || tm.c.closed {
			continue
		}

		switch tm.kind {
		case timerDial:
			tm.c.dialTimedOut(int(tm.attempt))
		case timerOptions:
			tm.c.upstreamOptions()
		}
	}
}

// rearm sets the read deadline to the first timer, give or take the slack.
func (l *loop) rearm() {
	if l.woken {
		return // run goes round anyway, and rearms then
	}

	if len(l.timers) == 0 {
		if l.armed != 0 {
			l.armed = 0
			l.file.SetReadDeadline(time.Time{}) //nolint:errcheck
		}

		return
	}

	at := l.timers[0].at + int64(timerSlack)
	if l.armed != 0 && l.armed <= at {
		return
	}

	l.armed = at
	l.file.SetReadDeadline(epoch.Add(time.Duration(at))) //nolint:errcheck // a closed loop needs no timers
}
