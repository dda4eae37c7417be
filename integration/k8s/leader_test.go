//go:build k8s

package k8s_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/talos-lb/talos-lb/integration/k8s/kapi"
)

// Short timers so a test takes seconds; client-go requires
// LeaseDuration > RenewDeadline > 1.2 × RetryPeriod.
const (
	leaseDuration = 2 * time.Second
	renewDeadline = 1500 * time.Millisecond
	retryPeriod   = 250 * time.Millisecond
)

// TestLeaderElection runs two candidates of client-go's leader election on a Lease, as
// lb-controller's replicas do: exactly one leads; when it stops, the other takes over, at
// once when the leader releases the Lease (a clean shutdown) and after the Lease expires
// when it does not (a crash).
func TestLeaderElection(t *testing.T) {
	c := kapi.Start(t)
	ns := c.CreateNamespace(t, "lb-system").Name

	for _, tc := range []struct {
		name    string
		release bool
	}{
		{"released", true},
		{"expired", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lease := "lb-controller-" + tc.name
			events := make(chan leadership, 16)
			candidates := map[string]*candidate{}

			for _, id := range []string{"replica-a", "replica-b"} {
				candidates[id] = runCandidate(t, c.RESTConfig(), ns, lease, id, tc.release, events)
			}

			first := waitLeading(t, events, "", 10*time.Second)

			// Hold: the other must not lead while the first renews.
			select {
			case ev := <-events:
				t.Fatalf("while %s leads: %+v", first, ev)
			case <-time.After(2 * leaseDuration):
			}

			if holder := leaseHolder(t, c, ns, lease); holder != first {
				t.Fatalf("Lease held by %q, leader is %s", holder, first)
			}

			stopped := time.Now()
			candidates[first].stop()

			if ev := <-events; ev.id != first || ev.leading {
				t.Fatalf("after stopping %s: %+v", first, ev)
			}

			holder := leaseHolder(t, c, ns, lease)
			if tc.release && holder == first {
				t.Errorf("Lease still held by %s after it stopped with ReleaseOnCancel", first)
			}

			if !tc.release && holder != first {
				t.Errorf("Lease held by %q right after %s stopped without releasing it", holder, first)
			}

			second := waitLeading(t, events, first, 10*time.Second)
			t.Logf("%s led; stopped; %s took over %v later", first, second, time.Since(stopped).Round(time.Millisecond))

			if holder := leaseHolder(t, c, ns, lease); holder != second {
				t.Errorf("Lease held by %q, leader is %s", holder, second)
			}
		})
	}
}

type leadership struct {
	id      string
	leading bool
}

type candidate struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// stop cancels the candidate's context and waits for its election loop to return.
func (c *candidate) stop() {
	c.cancel()
	<-c.done
}

// runCandidate starts one leader-election candidate with its own client; it reports on
// events when it starts and stops leading, and is stopped by a cleanup that runs before the
// cluster's (registered later), as kapi's package comment asks.
func runCandidate(t *testing.T, cfg *rest.Config, ns, lease, id string, release bool, events chan<- leadership) *candidate {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{cancel: cancel, done: make(chan struct{})}

	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Name: lease,
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: lease},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration:   leaseDuration,
		RenewDeadline:   renewDeadline,
		RetryPeriod:     retryPeriod,
		ReleaseOnCancel: release,
		Callbacks: leaderelection.LeaderCallbacks{
			// The leader's work runs until its context ends: then it must stop writing.
			OnStartedLeading: func(lctx context.Context) {
				events <- leadership{id, true}
				<-lctx.Done()
				events <- leadership{id, false}
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	go func() {
		defer close(c.done)
		elector.Run(ctx)
	}()

	t.Cleanup(c.stop)

	return c
}

// waitLeading waits for a candidate other than not to start leading.
func waitLeading(t *testing.T, events <-chan leadership, not string, timeout time.Duration) string {
	t.Helper()

	deadline := time.After(timeout)

	for {
		select {
		case ev := <-events:
			if ev.leading && ev.id != not {
				return ev.id
			}

			t.Fatalf("waiting for a new leader: %+v", ev)
		case <-deadline:
			t.Fatalf("no leader within %v", timeout)
		}
	}
}

func leaseHolder(t *testing.T, c *kapi.Cluster, ns, name string) string {
	t.Helper()

	l, err := c.Client.CoordinationV1().Leases(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading Lease %s/%s: %v", ns, name, err)
	}

	if l.Spec.HolderIdentity == nil {
		return ""
	}

	return *l.Spec.HolderIdentity
}
