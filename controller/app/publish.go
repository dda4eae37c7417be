package app

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/push"
	"github.com/talos-lb/talos-lb/controller/reconcile"
	"github.com/talos-lb/talos-lb/pkg/ipam"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// The resources here are the controller's own view for lbctl; failing to
// publish one is logged and retried by the next pass, never fatal.

func (c *Controller) publishController(ctx context.Context, leading bool) {
	modify(ctx, c, resources.NewControllerStatus(), func(r *resources.ControllerStatus) {
		s := r.TypedSpec().Value
		s.Identity = c.opts.Identity
		s.Leader = leading
		s.LeaderIdentity = c.leaderIdentity()
	})
	c.metrics.leader.Set(boolFloat(leading))
}

func (c *Controller) publishPass(ctx context.Context, res *reconcile.Result, cfg *loaded, alloc *ipam.Allocator, pushes map[string]push.Status) {
	modify(ctx, c, resources.NewControllerStatus(), func(r *resources.ControllerStatus) {
		s := r.TypedSpec().Value
		s.Identity = c.opts.Identity
		s.Leader = true
		s.LeaderIdentity = c.opts.Identity
		s.Services = uint32(len(res.Desired.Services)) //nolint:gosec // a count
		s.Nodes = uint32(len(res.Desired.Nodes))       //nolint:gosec // a count
		s.EligibleNodes = uint32(res.Desired.Eligible) //nolint:gosec // a count
		s.Warnings = res.Desired.Warnings
		s.LastRecompute = timestamppb.New(time.Now())
	})

	for _, w := range res.Desired.Warnings {
		c.opts.Logger.Warn(w)
	}

	c.metrics.services.Set(float64(len(res.Allocations)))
	c.metrics.failedServices.Set(float64(len(res.Errors)))

	poolErrors := cfg.PoolErrors
	if res.PoolErrors != nil {
		// The pools as a whole were refused (e.g. two overlap); the previous ones run.
		poolErrors = maps.Clone(poolErrors)
		for _, p := range cfg.Pools {
			poolErrors[p.Name] = res.PoolErrors.Error()
		}
	}

	c.publishPools(ctx, cfg.Pools, poolErrors, alloc)
	c.publishServices(ctx, res, pushes)
	c.publishPushes(ctx, pushes, res)
}

func (c *Controller) publishPools(ctx context.Context, pools []ipam.Pool, poolErrors map[string]string, alloc *ipam.Allocator) {
	type counts struct{ used, total [2]string }

	byPool := map[string]*counts{}

	for _, u := range alloc.Usage() {
		cnt := byPool[u.Pool]
		if cnt == nil {
			cnt = &counts{}
			byPool[u.Pool] = cnt
		}

		i := 0
		if u.Family == ipam.IPv6 {
			i = 1
		}

		cnt.used[i], cnt.total[i] = strconv.FormatInt(u.Used, 10), u.Total.String()
		c.metrics.poolUsed.WithLabelValues(u.Pool, u.Family.String()).Set(float64(u.Used))
	}

	keep := map[resource.ID]bool{}

	for _, p := range pools {
		keep[p.Name] = true
		cnt := byPool[p.Name]

		modify(ctx, c, resources.NewAddressPoolStatus(p.Name), func(r *resources.AddressPoolStatus) {
			s := r.TypedSpec().Value
			s.Addresses = p.Addresses
			s.AutoAssign = p.AutoAssign
			s.Priority = int32(p.Priority) //nolint:gosec // CRD validation bounds priority
			s.Error = poolErrors[p.Name]

			if cnt != nil {
				s.Ipv4Used, s.Ipv4Total = cnt.used[0], cnt.total[0]
				s.Ipv6Used, s.Ipv6Total = cnt.used[1], cnt.total[1]
			}
		})
	}

	for name, msg := range poolErrors {
		if !keep[name] {
			keep[name] = true
			modify(ctx, c, resources.NewAddressPoolStatus(name), func(r *resources.AddressPoolStatus) {
				r.TypedSpec().Value = &resourcepb.AddressPoolStatusSpec{Error: msg}
			})
		}
	}

	c.prune(ctx, resources.AddressPoolStatusType, keep)
}

func (c *Controller) publishServices(ctx context.Context, res *reconcile.Result, pushes map[string]push.Status) {
	announcing := announcers(pushes)
	keep := map[resource.ID]bool{}

	for _, key := range slices.Sorted(maps.Keys(res.Desired.Services)) {
		view := res.Desired.Services[key]
		al := res.Allocations[key]
		keep[key] = true

		modify(ctx, c, resources.NewServiceAllocation(key), func(r *resources.ServiceAllocation) {
			s := r.TypedSpec().Value
			s.Addresses = addrStrings(al.IPs)
			s.Pools = al.Pools
			s.SharingKey = res.SharingKeys[key]
			s.Protocols = view.Protocols
			s.Ranking = view.Ranking
			s.Announcing = nil

			for _, ip := range s.Addresses {
				s.Announcing = append(s.Announcing, announcing[ip]...)
			}

			slices.Sort(s.Announcing)
			s.Announcing = slices.Compact(s.Announcing)
			s.Error = res.Errors[key]

			if s.Error == "" {
				s.Error = view.Unannounced
			}
		})
	}

	// Services that failed before getting any IP are shown too.
	for key, msg := range res.Errors {
		if keep[key] {
			continue
		}

		keep[key] = true
		modify(ctx, c, resources.NewServiceAllocation(key), func(r *resources.ServiceAllocation) {
			r.TypedSpec().Value = &resourcepb.ServiceAllocationSpec{Error: msg}
		})
	}

	c.prune(ctx, resources.ServiceAllocationType, keep)
}

func (c *Controller) publishPushes(ctx context.Context, pushes map[string]push.Status, res *reconcile.Result) {
	keep := map[resource.ID]bool{}

	for node, st := range pushes {
		keep[node] = true

		modify(ctx, c, resources.NewAgentPush(node), func(r *resources.AgentPush) {
			s := r.TypedSpec().Value
			s.Address = st.Address
			s.DesiredGeneration = st.DesiredGeneration
			s.AckedGeneration = st.AckedGeneration
			s.State = st.State
			s.LastError = st.LastError
			s.ServiceIps = uint32(st.ServiceIPs) //nolint:gosec // a count
			s.Announcing = st.Announcing

			if !st.LastAck.IsZero() {
				s.LastAck = timestamppb.New(st.LastAck)
			}
		})
	}

	c.prune(ctx, resources.AgentPushType, keep)

	if res != nil {
		c.publishServices(ctx, res, pushes)
	}
}

// announcers maps a service IP to the nodes whose agents say they announce it.
func announcers(pushes map[string]push.Status) map[string][]string {
	out := map[string][]string{}

	for node, st := range pushes {
		for _, ip := range st.Announcing {
			out[ip] = append(out[ip], node)
		}
	}

	return out
}

func addrStrings[T interface{ String() string }](in []T) []string {
	out := make([]string, len(in))
	for i, a := range in {
		out[i] = a.String()
	}

	return out
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}

	return 0
}

func modify[T resource.Resource](ctx context.Context, c *Controller, r T, fn func(T)) {
	if err := safe.StateModify(ctx, c.State, r, func(r T) error { fn(r); return nil }); err != nil {
		c.opts.Logger.Warn("publishing resource", zap.String("id", r.Metadata().ID()), zap.Error(err))
	}
}

func (c *Controller) prune(ctx context.Context, typ resource.Type, keep map[resource.ID]bool) {
	list, err := c.State.List(ctx, resource.NewMetadata(resources.ControllerNamespace, typ, "", resource.VersionUndefined))
	if err != nil {
		c.opts.Logger.Warn("listing resources", zap.String("type", typ), zap.Error(err))

		return
	}

	for _, r := range list.Items {
		if keep[r.Metadata().ID()] {
			continue
		}

		if err := c.State.Destroy(ctx, r.Metadata()); err != nil && !state.IsNotFoundError(err) {
			c.opts.Logger.Warn("removing resource", zap.String("id", r.Metadata().ID()), zap.Error(err))
		}
	}
}
