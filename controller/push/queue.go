package push

import "sync"

// lane says how urgent a push is. Retries of unreachable agents have their
// own lane with at most half the workers, so dead agents waiting for their
// timeouts never hold up pushes to live ones.
type lane int

const (
	laneFresh lane = iota
	laneRetry
)

// queue hands node names to workers: each name at most once in the queue and
// once in work. A name added while in work comes back when its work is done,
// so a change that races a push is pushed again.
type queue struct {
	mu   sync.Mutex
	cond *sync.Cond

	fresh, retry []string
	queued       map[string]lane // waiting, and in which lane
	active       map[string]bool
	again        map[string]lane // added while active

	retryActive, retryMax int
	closed                bool
}

func newQueue(retryMax int) *queue {
	q := &queue{
		queued:   map[string]lane{},
		active:   map[string]bool{},
		again:    map[string]lane{},
		retryMax: max(retryMax, 1),
	}
	q.cond = sync.NewCond(&q.mu)

	return q
}

func (q *queue) add(name string, l lane) {
	q.mu.Lock()
	defer q.mu.Unlock()

	q.addLocked(name, l)
}

func (q *queue) addLocked(name string, l lane) {
	if q.active[name] {
		if cur, ok := q.again[name]; !ok || l < cur {
			q.again[name] = l
		}

		return
	}

	if cur, ok := q.queued[name]; ok && cur <= l {
		return
	}

	// New, or promoted from the retry lane: the stale retry entry is skipped when popped.
	q.queued[name] = l

	if l == laneFresh {
		q.fresh = append(q.fresh, name)
	} else {
		q.retry = append(q.retry, name)
	}

	q.cond.Broadcast()
}

// get blocks until a name is ready and a worker may take it; false once closed.
func (q *queue) get() (string, lane, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()

	for !q.closed {
		if name, ok := q.pop(&q.fresh, laneFresh); ok {
			return name, laneFresh, true
		}

		if q.retryActive < q.retryMax {
			if name, ok := q.pop(&q.retry, laneRetry); ok {
				q.retryActive++

				return name, laneRetry, true
			}
		}

		q.cond.Wait()
	}

	return "", 0, false
}

func (q *queue) pop(list *[]string, l lane) (string, bool) {
	for len(*list) > 0 {
		name := (*list)[0]
		(*list)[0] = ""
		*list = (*list)[1:]

		if cur, ok := q.queued[name]; ok && cur == l {
			delete(q.queued, name)
			q.active[name] = true

			return name, true
		}
	}

	return "", false
}

// done ends the work on name taken from lane l.
func (q *queue) done(name string, l lane) {
	q.mu.Lock()
	defer q.mu.Unlock()

	delete(q.active, name)

	if l == laneRetry {
		q.retryActive--
		q.cond.Broadcast()
	}

	if again, ok := q.again[name]; ok {
		delete(q.again, name)
		q.addLocked(name, again)
	}
}

// forget drops a name that is waiting (a removed node).
func (q *queue) forget(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()

	delete(q.queued, name)
	delete(q.again, name)
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()

	q.closed = true
	q.cond.Broadcast()
}
