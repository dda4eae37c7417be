package app

import (
	"context"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/talos-lb/talos-lb/controller/push"
	"github.com/talos-lb/talos-lb/controller/reconcile"
	"github.com/talos-lb/talos-lb/pkg/ipam"
)

func metaOf(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}

// lead runs while this replica holds the Lease. A fresh allocator rebuilds
// from Service status every term, so a replica that led before never acts on
// stale allocations.
func (c *Controller) lead(ctx context.Context, inf *caches) {
	log := c.opts.Logger
	log.Info("leading: reconciling and pushing")

	writer := newKubeWriter(c.client)
	defer writer.stop()

	alloc := ipam.New()
	rec := reconcile.New(reconcile.Options{
		Classes:            c.opts.Classes,
		IgnoreExcludeLabel: c.opts.IgnoreExcludeLabel,
		AgentPort:          c.opts.AgentPort,
	}, alloc, writer, log)

	sender := push.NewGRPCSender(c.opts.PushTLS)
	defer sender.Close() //nolint:errcheck

	pusher := push.New(sender, log.Named("push"), push.Options{Identity: c.opts.Identity, Resync: c.opts.Resync, Registry: c.opts.Registry})

	pushDone := make(chan struct{})

	go func() {
		defer close(pushDone)

		if err := pusher.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("pusher stopped", zap.Error(err))
		}
	}()

	resync := time.NewTicker(c.opts.Resync)
	defer resync.Stop()

	var last *reconcile.Result

	tracker := newAnnounceTracker()

	c.Kick()

	for {
		select {
		case <-ctx.Done():
			<-pushDone

			return
		case <-pusher.Changes():
			status := pusher.Status()
			c.publishPushes(ctx, status, last)
			tracker.update(last, status, inf.service, writer.Event)

			continue
		case <-resync.C:
		case <-c.kick:
			// Let a burst of informer events land before reading the caches.
			time.Sleep(20 * time.Millisecond)
		}

		cfg := c.loadConfig(ctx, inf, true)

		res, err := c.pass(ctx, inf, rec, cfg)
		if err != nil {
			log.Warn("pass incomplete, retrying", zap.Error(err))

			time.AfterFunc(time.Second, c.Kick)
		}

		if res == nil {
			continue
		}

		last = res

		pusher.Set(targets(res))
		c.publishPass(ctx, res, cfg, alloc, pusher.Status())
	}
}

func (c *Controller) pass(ctx context.Context, inf *caches, rec *reconcile.Reconciler, cfg *loaded) (*reconcile.Result, error) {
	start := time.Now()
	res, err := rec.Pass(ctx, inf.snapshot(), &cfg.Config)

	c.metrics.passSeconds.Observe(time.Since(start).Seconds())

	return res, err
}

// targets turns a pass's desired state into the pusher's input. Nodes
// without an address yet get nothing until the kubelet reports one.
func targets(res *reconcile.Result) map[string]push.Target {
	out := make(map[string]push.Target, len(res.Desired.Nodes))

	for name, ns := range res.Desired.Nodes {
		if ns.Address == "" {
			continue
		}

		out[name] = push.Target{Address: ns.Address, State: res.Desired.State(name)}
	}

	return out
}
