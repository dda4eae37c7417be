package member

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func members(self string, states map[string]string) []Status {
	out := []Status{}
	for name, st := range states {
		out = append(out, Status{Name: name, State: st, Self: name == self, Address: map[string]string{
			"node-a": "10.0.0.1:7947", "node-b": "10.0.0.2:7947", "node-c": "10.0.0.3:7947",
		}[name]})
	}

	return out
}

func addrs(seeds []seed) []string {
	out := []string{}
	for _, s := range seeds {
		out = append(out, s.Address)
	}

	return out
}

func TestWantedSeeds(t *testing.T) {
	pushed := map[string]string{"node-a": "10.0.0.1", "node-b": "10.0.0.2", "node-c": "10.0.0.3", "node-d": "fd00::4"}
	static := []string{"10.0.0.1:7947", "10.0.0.9:7000", "10.0.0.2:7947"}

	for _, tc := range []struct {
		name    string
		members map[string]string
		pending map[string]bool
		want    []seed
	}{
		{
			name:    "alone at start: every pushed node and every configured address, but ourselves",
			members: map[string]string{"node-a": StateAlive},
			pending: map[string]bool{"10.0.0.9:7000": true, "10.0.0.2:7947": true, "10.0.0.1:7947": true},
			want: []seed{
				{Address: "10.0.0.2:7947", Node: "node-b"},
				{Address: "10.0.0.3:7947", Node: "node-c"},
				{Address: "10.0.0.9:7000"},
				{Address: "[fd00::4]:7947", Node: "node-d"},
			},
		},
		{
			name:    "in the cluster: only the pushed nodes not live, and pending addresses",
			members: map[string]string{"node-a": StateAlive, "node-b": StateSuspect, "node-c": StateDead, "node-d": StateLeft},
			pending: map[string]bool{"10.0.0.9:7000": true},
			want: []seed{
				{Address: "10.0.0.3:7947", Node: "node-c"},
				{Address: "10.0.0.9:7000"},
				{Address: "[fd00::4]:7947", Node: "node-d"},
			},
		},
		{
			name:    "everyone live, nothing pending: nothing to do",
			members: map[string]string{"node-a": StateAlive, "node-b": StateAlive, "node-c": StateAlive, "node-d": StateAlive},
			want:    []seed{},
		},
		{
			name:    "others all dead: isolated, so the configured addresses again",
			members: map[string]string{"node-a": StateAlive, "node-b": StateDead, "node-c": StateDead, "node-d": StateDead},
			want: []seed{
				{Address: "10.0.0.2:7947", Node: "node-b"},
				{Address: "10.0.0.3:7947", Node: "node-c"},
				{Address: "10.0.0.9:7000"},
				{Address: "[fd00::4]:7947", Node: "node-d"},
			},
		},
		{
			name:    "leaving: nothing",
			members: map[string]string{"node-a": StateLeft},
			pending: map[string]bool{"10.0.0.9:7000": true},
			want:    nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, misnamed := wantedSeeds("node-a", members("node-a", tc.members), pushed, 7947, static, tc.pending)
			assert.Equal(t, tc.want, got)
			assert.Empty(t, misnamed)
		})
	}
}

func TestWantedSeedsMisnamedNodes(t *testing.T) {
	// The agents on node-b and on our own node use hostnames, not the Kubernetes names.
	pushed := map[string]string{"k8s-a": "10.0.0.1", "k8s-b": "10.0.0.2", "node-c": "10.0.0.3"}
	ms := []Status{
		{Name: "node-a", Address: "10.0.0.1:7947", State: StateAlive, Self: true},
		{Name: "host-b", Address: "10.0.0.2:7947", State: StateAlive},
		{Name: "node-c", Address: "10.0.0.3:7947", State: StateDead},
	}

	got, misnamed := wantedSeeds("node-a", ms, pushed, 7947, nil, nil)
	assert.Equal(t, []seed{{Address: "10.0.0.3:7947", Node: "node-c"}}, got)
	assert.Equal(t, map[string]string{"k8s-a": "node-a", "k8s-b": "host-b"}, misnamed)
}

func TestBackoff(t *testing.T) {
	c := newClock()
	b := newBackoff(time.Second, 8*time.Second)
	b.jitter = func(d time.Duration) time.Duration { return d }

	wanted := []seed{{Address: "a:1", Node: "a"}, {Address: "b:1"}}

	assert.Equal(t, []string{"a:1", "b:1"}, addrs(b.due(c.now(), wanted)), "first attempts at once")
	assert.Empty(t, b.due(c.now(), wanted), "in flight")
	assert.True(t, b.next().IsZero(), "nothing waits while in flight")

	fail := errors.New("connection refused")

	assert.True(t, b.done(c.now(), "a:1", fail), "the first failure is worth a log line")
	assert.False(t, b.done(c.now(), "b:1", nil))
	assert.Equal(t, c.now().Add(8*time.Second), b.attempts["b:1"].next, "joined: if still wanted, the longest delay")
	assert.Equal(t, c.now().Add(time.Second), b.next())

	// a: 1 s, 2 s, 4 s, 8 s, 8 s after each failure.
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		c.advance(d - time.Millisecond)
		assert.Empty(t, b.due(c.now(), wanted[:1]), "not yet after %s", d)
		c.advance(time.Millisecond)
		assert.Equal(t, []string{"a:1"}, addrs(b.due(c.now(), wanted[:1])), "after %s", d)
		assert.False(t, b.done(c.now(), "a:1", fail), "later failures log at debug")
	}

	// Not wanted any more (a became live): forgotten, so a new failure starts at once.
	b.due(c.now(), nil)
	assert.Empty(t, b.attempts)
	assert.Equal(t, []string{"a:1"}, addrs(b.due(c.now(), wanted[:1])))
	assert.True(t, b.done(c.now(), "a:1", fail))
}

func TestBackoffJitter(t *testing.T) {
	b := newBackoff(time.Second, 30*time.Second)

	for range 100 {
		d := b.jitter(10 * time.Second)
		assert.GreaterOrEqual(t, d, 8*time.Second)
		assert.LessOrEqual(t, d, 12*time.Second)
	}
}
