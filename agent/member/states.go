package member

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Member states, as in MemberSpec.state.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// States lists every state, for metrics.
var States = []string{StateAlive, StateSuspect, StateDead, StateLeft}

// Live says whether a member in state counts as running: alive or suspect
// (suspect is a missed probe, not a verdict).
func Live(state string) bool {
	return state == StateAlive || state == StateSuspect
}

// Status is one member as this node sees it.
type Status struct {
	Name string
	// Address is the member's gossip address, host:port.
	Address string
	State   string
	// Since is when this node saw the member enter State.
	Since time.Time
	Self  bool
}

// table is this node's view of the members, fed by memberlist's callbacks
// (which run with memberlist's own lock held: nothing here may block or call
// back into memberlist) and read by the controller.
//
// memberlist tells joins, deaths and departures (see events), but not
// suspicion: a node becomes suspect and, when it refutes, alive again without
// any callback, and its Node structs may only be read under memberlist's lock.
// So suspicion is taken from what the local probes see: a suspect mark when
// this node's probe of a member fails (memberlist logs it), cleared by the
// member's next direct ack, by its death or departure, or when the suspicion
// could not have lasted longer (memberlist declares a suspect dead within its
// maximum suspicion timeout, so a member still not dead then was refuted).
type table struct {
	self string
	// suspectFor bounds a suspect mark: memberlist's maximum suspicion timeout and a margin.
	suspectFor time.Duration
	now        func() time.Time
	onChange   func(to string)

	mu           sync.Mutex
	members      map[string]*Status
	suspectUntil map[string]time.Time
	changed      chan struct{}
}

func newTable(self, address string, suspectFor time.Duration, now func() time.Time, onChange func(to string)) *table {
	if now == nil {
		now = time.Now
	}

	if onChange == nil {
		onChange = func(string) {}
	}

	t := &table{
		self: self, suspectFor: suspectFor, now: now, onChange: onChange,
		members:      map[string]*Status{},
		suspectUntil: map[string]time.Time{},
		changed:      make(chan struct{}, 1),
	}
	t.members[self] = &Status{Name: self, Address: address, State: StateAlive, Since: now(), Self: true}

	return t
}

// notify wakes the reader without ever blocking the caller.
func (t *table) notify() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// set records what memberlist says of a node; mu must be held.
func (t *table) set(name, address, state string) {
	m, ok := t.members[name]
	if !ok {
		m = &Status{Name: name, Self: name == t.self}
		t.members[name] = m
	}

	changed := false

	if address != "" && m.Address != address {
		m.Address = address
		changed = true
	}

	if m.State != state {
		m.State = state
		m.Since = t.now()
		changed = true

		t.onChange(state)
	}

	if state != StateSuspect {
		delete(t.suspectUntil, name)
	}

	if changed {
		t.notify()
	}
}

// observe takes what a memberlist event (join, leave, update) says of a node.
func (t *table) observe(name, address, state string) {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.set(name, address, state)
}

// suspect marks a live member suspect after this node's probe of it failed.
func (t *table) suspect(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()

	m, ok := t.members[name]
	if !ok || m.Self || m.State != StateAlive {
		return
	}

	t.set(name, "", StateSuspect)
	t.suspectUntil[name] = t.now().Add(t.suspectFor)
}

// acked clears a suspect mark: the member answered a direct probe.
func (t *table) acked(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()

	if m, ok := t.members[name]; ok && m.State == StateSuspect {
		t.set(name, "", StateAlive)
	}
}

// expire clears suspect marks older than any suspicion could last and
// returns when the next one expires (zero: none).
func (t *table) expire() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()

	now := t.now()

	var next time.Time

	for name, until := range t.suspectUntil {
		if !now.Before(until) {
			t.set(name, "", StateAlive)

			continue
		}

		if next.IsZero() || until.Before(next) {
			next = until
		}
	}

	return next
}

// left marks this node as gone, before it tells the others.
func (t *table) left() {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.set(t.self, "", StateLeft)
}

// snapshot returns every member, sorted by name.
func (t *table) snapshot() []Status {
	t.mu.Lock()
	defer t.mu.Unlock()

	out := make([]Status, 0, len(t.members))

	for _, name := range slices.Sorted(maps.Keys(t.members)) {
		out = append(out, *t.members[name])
	}

	return out
}

// suspectFromLog recognises memberlist's log line for a failed probe of this
// node ("Suspect NAME has failed, no acks received") and returns NAME.
func suspectFromLog(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, "Suspect ")
	if !ok {
		return "", false
	}

	name, ok := strings.CutSuffix(rest, " has failed, no acks received")
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return "", false
	}

	return name, true
}
