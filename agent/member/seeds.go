package member

import (
	"maps"
	"math/rand/v2"
	"slices"
	"time"
)

// seed is an address to join and why.
type seed struct {
	// Address is host:port.
	Address string
	// Node is the pushed node expected there; "" for a configured address.
	Node string
}

// wantedSeeds lists what to join now, each address once, sorted:
//
//   - every pushed node but this one that gossip does not show live (never
//     seen, dead or left), on the gossip port: a new node, an agent that
//     restarted, or one on the other side of a healed partition (members
//     that marked each other dead never talk again unless someone joins);
//   - the configured addresses still pending (not joined since the agent
//     started or the list changed), and all of them while this node sees no
//     other live member.
//
// Nothing while this node is not alive itself (it is leaving).
//
// A pushed node whose address a live member of another name gossips from is
// not joined (it is there already) but returned in misnamed, pushed name to
// gossip name: the agent's node.name is not the Kubernetes node name, so
// L2 ownership can never see that node live.
func wantedSeeds(self string, members []Status, pushed map[string]string, port uint16, static []string, pending map[string]bool) (out []seed, misnamed map[string]string) {
	live := map[string]bool{}
	liveAt := map[string]string{}
	isolated := true
	selfAddr := ""

	for _, m := range members {
		if m.Self {
			if m.State != StateAlive {
				return nil, nil
			}

			selfAddr = m.Address

			continue
		}

		if Live(m.State) {
			live[m.Name] = true
			liveAt[m.Address] = m.Name
			isolated = false
		}
	}

	byAddr := map[string]seed{}

	for _, name := range slices.Sorted(maps.Keys(pushed)) {
		if name == self || live[name] {
			continue
		}

		addr := JoinAddress(pushed[name], port)

		switch {
		case addr == selfAddr:
			if misnamed == nil {
				misnamed = map[string]string{}
			}

			misnamed[name] = self

			continue
		case liveAt[addr] != "":
			if misnamed == nil {
				misnamed = map[string]string{}
			}

			misnamed[name] = liveAt[addr]

			continue
		}

		byAddr[addr] = seed{Address: addr, Node: name}
	}

	for _, addr := range static {
		if addr == selfAddr || !isolated && !pending[addr] {
			continue
		}

		if _, ok := byAddr[addr]; !ok {
			byAddr[addr] = seed{Address: addr}
		}
	}

	out = make([]seed, 0, len(byAddr))
	for _, addr := range slices.Sorted(maps.Keys(byAddr)) {
		out = append(out, byAddr[addr])
	}

	return out, misnamed
}

// backoff spaces the join attempts of each address: the first at once, then
// after min, 2×min, ... up to max (±20 % jitter, so agents that lost the
// same node do not retry in step). A successful join waits max too: the
// member should show up live within milliseconds, and if it does not (the
// agent there runs under another node name), retrying faster would not help.
type backoff struct {
	min, max time.Duration
	jitter   func(time.Duration) time.Duration

	attempts map[string]*attempt
}

type attempt struct {
	failures int
	next     time.Time
	inFlight bool
	// loggedFailure: the first failure of a run of failures was logged.
	loggedFailure bool
}

func newBackoff(minDelay, maxDelay time.Duration) *backoff {
	return &backoff{
		min: minDelay, max: maxDelay,
		jitter: func(d time.Duration) time.Duration {
			return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d)) //nolint:gosec // jitter needs no crypto
		},
		attempts: map[string]*attempt{},
	}
}

// due returns the wanted seeds whose turn it is and marks them in flight;
// addresses no longer wanted are forgotten, so they start afresh.
func (b *backoff) due(now time.Time, wanted []seed) []seed {
	keep := make(map[string]bool, len(wanted))

	var out []seed

	for _, s := range wanted {
		keep[s.Address] = true

		a, ok := b.attempts[s.Address]
		if !ok {
			a = &attempt{}
			b.attempts[s.Address] = a
		}

		if a.inFlight || now.Before(a.next) {
			continue
		}

		a.inFlight = true

		out = append(out, s)
	}

	for addr, a := range b.attempts {
		if !keep[addr] && !a.inFlight {
			delete(b.attempts, addr)
		}
	}

	return out
}

// done records an attempt's result and says whether a failure is the first
// of a run (worth logging above debug level).
func (b *backoff) done(now time.Time, addr string, err error) (firstFailure bool) {
	a, ok := b.attempts[addr]
	if !ok {
		a = &attempt{}
		b.attempts[addr] = a
	}

	a.inFlight = false

	if err == nil {
		a.failures = 0
		a.loggedFailure = false
		a.next = now.Add(b.jitter(b.max))

		return false
	}

	a.failures++

	delay := b.max
	if a.failures < 32 {
		delay = min(b.min<<(a.failures-1), b.max)
	}

	a.next = now.Add(b.jitter(delay))

	first := !a.loggedFailure
	a.loggedFailure = true

	return first
}

// next is when the earliest waiting attempt is due; zero when none waits.
func (b *backoff) next() time.Time {
	var t time.Time

	for _, a := range b.attempts {
		if a.inFlight || a.next.IsZero() {
			continue
		}

		if t.IsZero() || a.next.Before(t) {
			t = a.next
		}
	}

	return t
}
