package member

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time             { return c.t }
func (c *clock) advance(d time.Duration)    { c.t = c.t.Add(d) }
func newClock() *clock                      { return &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)} }
func (t *table) stateOf(name string) string { return t.members[name].State }

func drained(t *table) bool {
	select {
	case <-t.changed:
		return true
	default:
		return false
	}
}

func TestTableStates(t *testing.T) {
	c := newClock()

	var changes []string

	tb := newTable("node-a", "", 4*time.Second, c.now, func(to string) { changes = append(changes, to) })

	snap := tb.snapshot()
	require.Len(t, snap, 1)
	assert.Equal(t, Status{Name: "node-a", State: StateAlive, Since: c.t, Self: true}, snap[0], "self is alive from the start")

	// memberlist tells our own join too: it brings our address.
	tb.observe("node-a", "10.0.0.1:7947", StateAlive)
	assert.Equal(t, "10.0.0.1:7947", tb.snapshot()[0].Address)
	assert.True(t, drained(tb))

	c.advance(time.Second)
	tb.observe("node-b", "10.0.0.2:7947", StateAlive)
	tb.observe("node-c", "10.0.0.3:7947", StateAlive)
	assert.Equal(t, StateAlive, tb.stateOf("node-b"))

	// A failed probe makes a live member suspect; its next ack makes it alive.
	c.advance(time.Second)
	tb.suspect("node-b")
	assert.Equal(t, StateSuspect, tb.stateOf("node-b"))
	assert.Equal(t, c.t, tb.members["node-b"].Since)

	tb.acked("node-b")
	assert.Equal(t, StateAlive, tb.stateOf("node-b"))

	// A suspect that is neither acked nor declared dead was refuted: alive
	// again once the longest suspicion is over.
	tb.suspect("node-b")

	c.advance(3 * time.Second)
	assert.Equal(t, c.t.Add(time.Second), tb.expire())
	assert.Equal(t, StateSuspect, tb.stateOf("node-b"))

	c.advance(time.Second)
	assert.True(t, tb.expire().IsZero())
	assert.Equal(t, StateAlive, tb.stateOf("node-b"))

	// Suspect, then dead: a later failed probe or ack does not revive it.
	tb.suspect("node-c")
	tb.observe("node-c", "10.0.0.3:7947", StateDead)
	tb.suspect("node-c")
	tb.acked("node-c")
	c.advance(time.Hour)
	tb.expire()
	assert.Equal(t, StateDead, tb.stateOf("node-c"))

	// Unknown members and self are never suspected.
	tb.suspect("node-x")
	tb.suspect("node-a")
	assert.NotContains(t, tb.members, "node-x")
	assert.Equal(t, StateAlive, tb.stateOf("node-a"))

	// Leaving: self says left.
	tb.left()
	assert.Equal(t, StateLeft, tb.stateOf("node-a"))

	assert.Equal(t, []string{
		StateAlive, StateAlive, // node-b, node-c joined
		StateSuspect, StateAlive, StateSuspect, StateAlive, // node-b
		StateSuspect, StateDead, // node-c
		StateLeft, // self
	}, changes)

	names := []string{}
	for _, m := range tb.snapshot() {
		names = append(names, m.Name)
	}

	assert.Equal(t, []string{"node-a", "node-b", "node-c"}, names, "sorted by name")
}

func TestTableNotifiesWithoutBlocking(t *testing.T) {
	tb := newTable("node-a", "", time.Second, nil, nil)

	for i := range 10 {
		tb.observe("node-b", "10.0.0.2:7947", []string{StateAlive, StateDead}[i%2])
	}

	assert.True(t, drained(tb))
	assert.False(t, drained(tb), "changes are coalesced")

	tb.observe("node-b", "10.0.0.2:7947", StateDead)
	assert.False(t, drained(tb), "no change, no notification")
}

func TestSuspectFromLog(t *testing.T) {
	for msg, want := range map[string]string{
		"Suspect node-b has failed, no acks received":  "node-b",
		"Suspect  has failed, no acks received":        "",
		"Suspect a b has failed, no acks received":     "",
		"Marking node-b as failed, suspect timeout":    "",
		"Suspect node-b has failed, no acks received!": "",
	} {
		name, ok := suspectFromLog(msg)
		assert.Equal(t, want != "", ok, msg)
		assert.Equal(t, want, name, msg)
	}
}

func TestLive(t *testing.T) {
	assert.True(t, Live(StateAlive))
	assert.True(t, Live(StateSuspect))
	assert.False(t, Live(StateDead))
	assert.False(t, Live(StateLeft))
	assert.False(t, Live(""))
}
