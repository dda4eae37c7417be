package app

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/talos-lb/talos-lb/controller/push"
	"github.com/talos-lb/talos-lb/controller/reconcile"
	"github.com/talos-lb/talos-lb/pkg/ipam"
)

func TestAnnounceTrackerEventsOnChangesOnly(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}}
	lookup := func(key string) *corev1.Service {
		if key == "default/web" {
			return svc
		}

		return nil
	}

	res := &reconcile.Result{Allocations: map[string]ipam.Allocation{
		"default/web": {IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
	}}

	var events []string

	record := func(_ *corev1.Service, typ, reason, msg string) { events = append(events, typ+" "+reason+": "+msg) }
	tr := newAnnounceTracker()
	pushes := func(owner string) map[string]push.Status {
		out := map[string]push.Status{"node-a": {}, "node-b": {}}
		if owner != "" {
			out[owner] = push.Status{Announcing: []string{"192.0.2.1"}}
		}

		return out
	}

	tr.update(res, pushes(""), lookup, record)
	require.Empty(t, events, "nothing announced yet after a start is not news")

	tr.update(res, pushes("node-a"), lookup, record)
	tr.update(res, pushes("node-a"), lookup, record)
	tr.update(res, pushes("node-b"), lookup, record)
	tr.update(res, pushes(""), lookup, record)

	require.Equal(t, []string{
		"Normal Announced: 192.0.2.1 announced by node-a",
		"Normal Announced: 192.0.2.1 announced by node-b (was node-a)",
		"Warning NotAnnounced: no node announces 192.0.2.1 any more (was node-b)",
	}, events)
}
