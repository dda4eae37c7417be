package responder

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A pause (simulated: the guard's clock set back) stops answering at once,
// holds for the hold period, then resumes and says so.
func TestPauseGuard(t *testing.T) {
	g := newPauseGuard(50*time.Millisecond, 300*time.Millisecond)

	paused := make(chan time.Duration, 1)
	resumed := make(chan struct{}, 1)
	stop := make(chan struct{})

	defer close(stop)

	go g.run(stop, func(d time.Duration) { paused <- d }, func() { resumed <- struct{}{} })

	// Running: it has ticked.
	require.Eventually(t, func() bool { return g.last.Load() > 0 && g.awake() }, time.Second, time.Millisecond)

	// As if the process had been stopped for a second.
	g.last.Store(g.now() - int64(time.Second))
	require.False(t, g.awake(), "answering right after a pause")

	start := time.Now()

	select {
	case d := <-paused:
		require.GreaterOrEqual(t, d, time.Second)
	case <-time.After(time.Second):
		t.Fatal("pause not noticed")
	}

	require.False(t, g.awake(), "answering during the hold")

	select {
	case <-resumed:
	case <-time.After(2 * time.Second):
		t.Fatal("never resumed")
	}

	require.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)
	require.True(t, g.awake())
	require.EqualValues(t, 1, g.pauses.Load())
}
