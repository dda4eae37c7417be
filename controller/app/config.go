package app

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/crd"
	"github.com/talos-lb/talos-lb/controller/desired"
	"github.com/talos-lb/talos-lb/controller/reconcile"
)

// loaded is the configuration a pass runs with, and what was wrong with it.
type loaded struct {
	reconcile.Config
	// PoolErrors says why a pool object is left out.
	PoolErrors map[string]string
}

// loadConfig reads our CRD objects from the informers, builds the valid
// configuration, and writes each object's Valid condition when it changed.
// An invalid object is left out (and says why); the rest keeps working.
func (c *Controller) loadConfig(ctx context.Context, inf *caches, writeConditions bool) *loaded {
	var objs []*unstructured.Unstructured

	for _, kind := range slices.Sorted(maps.Keys(inf.config)) {
		for _, o := range inf.config[kind].GetStore().List() {
			objs = append(objs, o.(*unstructured.Unstructured)) //nolint:forcetypeassert // dynamic informer
		}
	}

	cfg, problems := crd.Build(objs)
	if problems.Errors == nil {
		problems.Errors = map[crd.Ref]error{}
	}

	out := &loaded{PoolErrors: map[string]string{}}
	out.Pools = cfg.IPAMPools()
	out.PoolLabels = map[string]map[string]string{}

	for _, p := range cfg.Pools {
		out.PoolLabels[p.Name] = p.Labels
	}

	for ref, err := range problems.Errors {
		if ref.Kind == crd.KindIPAddressPool {
			out.PoolErrors[ref.Name] = err.Error()
		}
	}

	for _, a := range cfg.L2Advertisements {
		out.L2 = append(out.L2, desired.L2Rule{
			Name:       a.Name,
			Pools:      poolSet(cfg, func(pool string) bool { return slices.Contains(cfg.L2AdvertisementsForPool(pool), a) }),
			Nodes:      cfg.L2AdvertisementNodes(a),
			Interfaces: a.Spec.Interfaces,
		})
	}

	for _, a := range cfg.BGPAdvertisements {
		out.BGP = append(out.BGP, desired.BGPRule{
			Pools: poolSet(cfg, func(pool string) bool { return slices.Contains(cfg.BGPAdvertisementsForPool(pool), a) }),
			Nodes: cfg.BGPAdvertisementNodes(a),
			Spec:  bgpRule(a),
		})
	}

	for _, p := range cfg.Peers {
		spec, err := c.pushedPeer(ctx, p)
		if err != nil {
			// Without its password the session would come up unauthenticated
			// or not at all: leave this peer out, keep the others.
			problems.Errors[p.Ref()] = err

			continue
		}

		out.Peers = append(out.Peers, desired.Peer{Nodes: cfg.PeerNodes(p), Spec: spec})
	}

	c.metrics.invalidObjects.Set(float64(len(problems.Errors)))

	if writeConditions {
		c.writeConditions(ctx, objs, problems)
	}

	return out
}

// poolSet precomputes which pools a rule selects, so the per-IP question is a map lookup.
func poolSet(cfg *crd.Config, selects func(pool string) bool) desired.Names {
	set := map[string]bool{}

	for _, p := range cfg.Pools {
		if selects(p.Name) {
			set[p.Name] = true
		}
	}

	return func(name string, _ map[string]string) bool { return set[name] }
}

func bgpRule(a *crd.BGPAdvertisement) *resourcepb.BgpAdvertisementRule {
	r := &resourcepb.BgpAdvertisementRule{
		Name:             a.Name,
		Communities:      a.Spec.Communities,
		LargeCommunities: a.Spec.LargeCommunities,
		LocalPref:        a.Spec.LocalPref,
		Peers:            a.Spec.Peers,
	}

	// A host route is the default: 0 on the wire, whatever the object spells.
	if l := a.Spec.AggregationLength; l != nil && *l != 32 {
		r.AggregationLength = uint32(*l) //nolint:gosec // validated 1-32
	}

	if l := a.Spec.AggregationLengthV6; l != nil && *l != 128 {
		r.AggregationLengthV6 = uint32(*l) //nolint:gosec // validated 1-128
	}

	return r
}

func duration(d *metav1.Duration) *durationpb.Duration {
	if d == nil || d.Duration == 0 {
		return nil
	}

	return durationpb.New(d.Duration)
}

// pushedPeer turns a BGPPeer into what agents run, reading its password
// Secret when it names one.
func (c *Controller) pushedPeer(ctx context.Context, p *crd.BGPPeer) (*resourcepb.PushedBgpPeer, error) {
	s := p.Spec
	out := &resourcepb.PushedBgpPeer{
		LocalAsn: s.MyASN,
		Password: s.Password,
		Peer: &resourcepb.BgpPeerSpec{
			Name:         p.Name,
			Address:      s.PeerAddress,
			Port:         uint32(s.PeerPort),
			Asn:          s.PeerASN,
			LocalAddress: s.SourceAddress,
			HoldTime:     duration(s.HoldTime),
			Keepalive:    duration(s.KeepaliveTime),
			Multihop:     uint32(s.EBGPMultiHopTTL),
		},
	}

	if s.BFD != nil {
		out.Peer.Bfd = true
		out.Peer.BfdMinTx = durationpb.New(s.BFD.MinTx.Duration)
		out.Peer.BfdMinRx = durationpb.New(s.BFD.MinRx.Duration)
		out.Peer.BfdMultiplier = s.BFD.Multiplier
	}

	if s.GracefulRestart != nil && s.GracefulRestart.Enabled {
		out.Peer.GracefulRestart = true
		out.Peer.RestartTime = durationpb.New(s.GracefulRestart.RestartTime.Duration)
	}

	if ref := s.PasswordSecret; ref != nil {
		getCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()

		secret, err := c.client.CoreV1().Secrets(p.Namespace).Get(getCtx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("spec.passwordSecret: reading Secret %s/%s: %w", p.Namespace, ref.Name, err)
		}

		pw, ok := secret.Data[ref.Key]
		if !ok || len(pw) == 0 {
			return nil, fmt.Errorf("spec.passwordSecret: Secret %s/%s has no key %q", p.Namespace, ref.Name, ref.Key)
		}

		out.Password = string(pw)
	}

	return out, nil
}

// writeConditions sets the Valid condition on every object whose condition changed.
func (c *Controller) writeConditions(ctx context.Context, objs []*unstructured.Unstructured, problems crd.Problems) {
	for _, u := range objs {
		ref := crd.Ref{Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
		cond := problems.Condition(ref, u.GetGeneration())

		var st crd.Status
		if raw, ok := u.Object["status"].(map[string]any); ok {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &st); err != nil {
				st = crd.Status{}
			}
		}

		if !meta.SetStatusCondition(&st.Conditions, cond) {
			continue
		}

		raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
		if err != nil {
			continue
		}

		updated := u.DeepCopy()
		updated.Object["status"] = raw

		if _, err := c.dynamic.Resource(crd.Resources[ref.Kind]).Namespace(ref.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
			c.opts.Logger.Warn("writing condition", zap.Stringer("object", ref), zap.Error(err))

			continue
		}

		if cond.Status != metav1.ConditionTrue {
			c.opts.Logger.Warn("invalid configuration object", zap.Stringer("object", ref), zap.String("message", cond.Message))
		}
	}
}
