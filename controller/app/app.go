// Package app is lb-controller: informers over Services, EndpointSlices,
// Nodes, Namespaces and our CRDs; leader election on a Lease; and, while
// leading, the reconcile loop that allocates IPs and pushes every agent its
// desired state. Every replica serves its view to lbctl as COSI resources.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/talos-lb/talos-lb/controller/crd"
	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/controller/reconcile"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Options configure the controller.
type Options struct {
	Kube               *rest.Config
	Classes            lbservice.Classes
	IgnoreExcludeLabel bool
	// AgentPort is the agents' gRPC port.
	AgentPort int
	// Identity names this replica in the Lease and in pushes (e.g. the pod name).
	Identity       string
	LeaseNamespace string
	LeaseName      string
	LeaseDuration  time.Duration
	RenewDeadline  time.Duration
	RetryPeriod    time.Duration
	// PushTLS dials agents: the controller's client certificate, ServerName of the agents.
	PushTLS *tls.Config
	// Resync re-runs a pass (and re-pushes) this often without any change.
	Resync   time.Duration
	Registry prometheus.Registerer
	Logger   *zap.Logger
}

// Controller is one lb-controller replica.
type Controller struct {
	opts    Options
	client  kubernetes.Interface
	dynamic dynamic.Interface
	// State holds the resources served to lbctl.
	State   state.State
	metrics *metrics

	kick chan struct{}

	mu     sync.Mutex
	leader string
}

// New builds a controller; Run starts it.
func New(ctx context.Context, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(opts.Kube)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}

	dyn, err := dynamic.NewForConfig(opts.Kube)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}

	st := state.WrapCore(namespaced.NewState(inmem.Build))
	if err := resources.Register(ctx, st); err != nil {
		return nil, err
	}

	return &Controller{
		opts:    opts,
		client:  client,
		dynamic: dyn,
		State:   st,
		metrics: newMetrics(opts.Registry),
		kick:    make(chan struct{}, 1),
	}, nil
}

// caches are the informers a pass reads.
type caches struct {
	core       informers.SharedInformerFactory
	dyn        dynamicinformer.DynamicSharedInformerFactory
	services   cache.SharedIndexInformer
	nodes      cache.SharedIndexInformer
	namespaces cache.SharedIndexInformer
	slices     cache.SharedIndexInformer
	config     map[string]cache.SharedIndexInformer
}

func (c *Controller) startInformers(ctx context.Context) (*caches, error) {
	inf := &caches{
		core:   informers.NewSharedInformerFactory(c.client, 0),
		dyn:    dynamicinformer.NewDynamicSharedInformerFactory(c.dynamic, 0),
		config: map[string]cache.SharedIndexInformer{},
	}

	inf.services = inf.core.Core().V1().Services().Informer()
	inf.nodes = inf.core.Core().V1().Nodes().Informer()
	inf.namespaces = inf.core.Core().V1().Namespaces().Informer()
	inf.slices = inf.core.Discovery().V1().EndpointSlices().Informer()

	for kind, gvr := range crd.Resources {
		inf.config[kind] = inf.dyn.ForResource(gvr).Informer()
	}

	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.Kick() },
		UpdateFunc: func(any, any) { c.Kick() },
		DeleteFunc: func(any) { c.Kick() },
	}

	all := []cache.SharedIndexInformer{inf.services, inf.nodes, inf.namespaces, inf.slices}
	for _, i := range inf.config {
		all = append(all, i)
	}

	for _, i := range all {
		if _, err := i.AddEventHandler(handler); err != nil {
			return nil, fmt.Errorf("adding event handler: %w", err)
		}
	}

	inf.core.Start(ctx.Done())
	inf.dyn.Start(ctx.Done())

	synced := make([]cache.InformerSynced, 0, len(all))
	for _, i := range all {
		synced = append(synced, i.HasSynced)
	}

	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil, errors.New("informer caches did not sync (are the CRDs in deploy/crds installed?)")
	}

	return inf, nil
}

// Kick asks for a pass soon; kicks while one is pending coalesce.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run runs the controller until ctx ends: informers, then leader election
// rounds; while leading, the reconcile loop.
func (c *Controller) Run(ctx context.Context) error {
	infCtx, stopInformers := context.WithCancel(ctx)

	inf, err := c.startInformers(infCtx)
	if err != nil {
		stopInformers()

		return err
	}

	// Informers stop before anything else so no watch outlives the client.
	defer func() {
		stopInformers()
		inf.core.Shutdown()
		inf.dyn.Shutdown()
	}()

	c.publishController(ctx, false)

	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metaOf(c.opts.LeaseNamespace, c.opts.LeaseName),
		Client:     c.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.opts.Identity},
	}

	for ctx.Err() == nil {
		elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   c.opts.LeaseDuration,
			RenewDeadline:   c.opts.RenewDeadline,
			RetryPeriod:     c.opts.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            c.opts.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) { c.lead(lctx, inf) },
				OnStoppedLeading: func() {
					c.opts.Logger.Info("not leading")
					c.publishController(context.WithoutCancel(ctx), false)
				},
				OnNewLeader: func(identity string) {
					c.mu.Lock()
					c.leader = identity
					c.mu.Unlock()
					c.opts.Logger.Info("leader", zap.String("identity", identity))
					c.publishController(ctx, identity == c.opts.Identity)
				},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}

		elector.Run(ctx)
	}

	return nil
}

func (c *Controller) leaderIdentity() string {
	c.mu.Lock()
	defer c.mu.Unlock()

	return c.leader
}

// snapshot reads the informer caches.
func (inf *caches) snapshot() *reconcile.Cluster {
	cl := &reconcile.Cluster{NamespaceLabels: map[string]map[string]string{}}

	for _, o := range inf.services.GetStore().List() {
		cl.Services = append(cl.Services, o.(*corev1.Service)) //nolint:forcetypeassert // typed informer
	}

	for _, o := range inf.nodes.GetStore().List() {
		cl.Nodes = append(cl.Nodes, o.(*corev1.Node)) //nolint:forcetypeassert // typed informer
	}

	for _, o := range inf.namespaces.GetStore().List() {
		ns := o.(*corev1.Namespace) //nolint:forcetypeassert // typed informer
		cl.NamespaceLabels[ns.Name] = labels.Set(ns.Labels)
	}

	for _, o := range inf.slices.GetStore().List() {
		cl.Slices = append(cl.Slices, o.(*discoveryv1.EndpointSlice)) //nolint:forcetypeassert // typed informer
	}

	return cl
}

// Identity is this replica's name in the Lease and in pushes.
func (c *Controller) Identity() string { return c.opts.Identity }

// service returns the informer's Service namespace/name, or nil.
func (inf *caches) service(key string) *corev1.Service {
	obj, ok, err := inf.services.GetStore().GetByKey(key)
	if err != nil || !ok {
		return nil
	}

	return obj.(*corev1.Service) //nolint:forcetypeassert // typed informer
}
