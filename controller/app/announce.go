package app

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/controller/push"
	"github.com/talos-lb/talos-lb/controller/reconcile"
)

// Event reasons for announcement changes, written on Services.
const (
	ReasonAnnounced    = "Announced"
	ReasonNotAnnounced = "NotAnnounced"
)

// announceTracker turns changes of who announces a Service's IPs, as the
// agents report it in their push answers, into Events on the Service: an L2
// failover that agents settled among themselves shows up in
// `kubectl describe service` without the controller deciding it.
type announceTracker struct {
	last map[string]string
}

func newAnnounceTracker() *announceTracker {
	return &announceTracker{last: map[string]string{}}
}

func (t *announceTracker) update(res *reconcile.Result, pushes map[string]push.Status, lookup func(key string) *corev1.Service, event func(*corev1.Service, string, string, string)) {
	if res == nil {
		return
	}

	by := announcers(pushes)
	seen := map[string]bool{}

	for key, al := range res.Allocations {
		seen[key] = true

		var nodes []string
		for _, ip := range al.IPs {
			nodes = append(nodes, by[ip.String()]...)
		}

		slices.Sort(nodes)
		now := strings.Join(slices.Compact(nodes), ", ")
		before, known := t.last[key]
		t.last[key] = now

		if now == before || (!known && now == "") {
			continue
		}

		svc := lookup(key)
		if svc == nil {
			continue
		}

		switch {
		case now == "":
			event(svc, corev1.EventTypeWarning, ReasonNotAnnounced, fmt.Sprintf("no node announces %s any more (was %s)", lbservice.Describe(al.IPs), before))
		case before == "":
			event(svc, corev1.EventTypeNormal, ReasonAnnounced, fmt.Sprintf("%s announced by %s", lbservice.Describe(al.IPs), now))
		default:
			event(svc, corev1.EventTypeNormal, ReasonAnnounced, fmt.Sprintf("%s announced by %s (was %s)", lbservice.Describe(al.IPs), now, before))
		}
	}

	for key := range t.last {
		if !seen[key] {
			delete(t.last, key)
		}
	}
}
