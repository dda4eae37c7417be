package responder

import (
	"sync/atomic"
	"time"
)

// pauseGuard notices that the agent did not run for a while (SIGSTOP, a
// paused VM, a starved process). Peers may have declared it dead meanwhile
// and taken its addresses over, while its own view of who owns what is from
// before the pause: answering at once would make two answerers until the
// gossip tells it otherwise. So after such a pause it answers and announces
// nothing for a hold period, long enough for the gossip to settle, and then
// announces what it still owns as on a takeover.
type pauseGuard struct {
	gap, hold time.Duration
	base      time.Time // monotonic origin of the fields below
	last      atomic.Int64
	holdUntil atomic.Int64
	pauses    atomic.Uint64
}

// newPauseGuard starts the guard's clock: run must follow at once.
func newPauseGuard(gap, hold time.Duration) *pauseGuard {
	return &pauseGuard{gap: gap, hold: hold, base: time.Now()}
}

func (g *pauseGuard) now() int64 {
	return int64(time.Since(g.base))
}

// awake says whether answering is safe now: the guard's clock ran within the
// gap (else the process was paused and the guard has not caught up yet) and
// no hold runs.
func (g *pauseGuard) awake() bool {
	n := g.now()

	return n-g.last.Load() <= int64(g.gap) && n >= g.holdUntil.Load()
}

// run ticks until stop; paused is called when a pause is noticed, resumed
// when its hold ends.
func (g *pauseGuard) run(stop <-chan struct{}, paused func(time.Duration), resumed func()) {
	t := time.NewTicker(g.gap / 10)
	defer t.Stop()

	holding := false

	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}

		n := g.now()

		if d := time.Duration(n - g.last.Swap(n)); d > g.gap {
			g.holdUntil.Store(n + int64(g.hold))
			g.pauses.Add(1)

			holding = true

			paused(d)

			continue
		}

		if holding && n >= g.holdUntil.Load() {
			holding = false

			resumed()
		}
	}
}
