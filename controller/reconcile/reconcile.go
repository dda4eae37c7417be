// Package reconcile is one pass of the controller: from a snapshot of the
// cluster and the CRD configuration it allocates service IPs, writes Service
// status and Events, and computes every node's desired state.
//
// A pass is level-triggered: it reads everything and converges, so a missed
// event or a failed write is fixed by the next pass. Kubernetes is the source
// of truth: the first pass rebuilds the allocations from Service status, so a
// restarted controller never moves an IP.
package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/talos-lb/talos-lb/controller/desired"
	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// Event reasons written on Services.
const (
	ReasonAllocated        = "IPAllocated"
	ReasonAllocationFailed = "AllocationFailed"
	ReasonConflict         = "IPConflict"
)

// Cluster is a snapshot of what the informers hold.
type Cluster struct {
	Services []*corev1.Service
	Nodes    []*corev1.Node
	// NamespaceLabels maps namespace name to its labels.
	NamespaceLabels map[string]map[string]string
	Slices          []*discoveryv1.EndpointSlice
}

// Config is the controller's configuration, from the CRDs.
type Config struct {
	Pools      []ipam.Pool
	PoolLabels map[string]map[string]string
	L2         []desired.L2Rule
	BGP        []desired.BGPRule
	Peers      []desired.Peer
}

// Writer is where a pass's side effects go.
type Writer interface {
	// UpdateServiceStatus writes svc's status (a modified copy of an informer object).
	UpdateServiceStatus(ctx context.Context, svc *corev1.Service) error
	// Event records an Event on svc.
	Event(svc *corev1.Service, eventType, reason, message string)
}

// Options configure a Reconciler.
type Options struct {
	Classes            lbservice.Classes
	IgnoreExcludeLabel bool
	// AgentPort is the agents' gRPC port; their host comes from the Node's addresses.
	AgentPort int
}

// Reconciler holds the state passes share: the allocator and what was said.
type Reconciler struct {
	opts   Options
	alloc  *ipam.Allocator
	writer Writer
	log    *zap.Logger

	rebuilt bool
	// failures remembers the last failure Event per Service, so a Service
	// stuck on the same error gets one Event, not one per pass.
	failures map[ipam.ServiceKey]string
}

// New returns a Reconciler that has not rebuilt its allocations yet.
func New(opts Options, alloc *ipam.Allocator, writer Writer, log *zap.Logger) *Reconciler {
	return &Reconciler{opts: opts, alloc: alloc, writer: writer, log: log, failures: map[ipam.ServiceKey]string{}}
}

// Result is what a pass computed.
type Result struct {
	Desired *desired.Output
	// Errors says per Service (namespace/name) why it has no address.
	Errors      map[string]string
	Allocations map[string]ipam.Allocation
	// SharingKeys per Service, for status.
	SharingKeys map[string]string
	// PoolErrors says why a pool is not in use.
	PoolErrors error
}

// Pass runs one reconcile pass. It returns an error only when writes failed;
// the caller runs another pass soon.
func (r *Reconciler) Pass(ctx context.Context, cl *Cluster, cfg *Config) (*Result, error) {
	res := &Result{Errors: map[string]string{}, Allocations: map[string]ipam.Allocation{}, SharingKeys: map[string]string{}}

	if err := r.alloc.SetPools(cfg.Pools); err != nil {
		// The previous pools keep working: a bad pool edit must not strip IPs.
		res.PoolErrors = err
		r.log.Warn("pools not applied, keeping the previous ones", zap.Error(err))
	}

	ours := r.ours(cl.Services)

	if !r.rebuilt {
		r.rebuild(ours, cl.NamespaceLabels)
		r.rebuilt = true
	}

	var writeErrs []error

	r.releaseGone(ours)

	for _, svc := range ours {
		if err := r.allocate(ctx, svc, cl.NamespaceLabels[svc.Namespace], res); err != nil {
			writeErrs = append(writeErrs, err)
		}
	}

	res.Desired = desired.Compute(r.desiredInput(cl, cfg, ours, res))

	return res, errors.Join(writeErrs...)
}

// ours returns our Services, oldest first: the order of precedence when two
// claim the same IP.
func (r *Reconciler) ours(all []*corev1.Service) []*corev1.Service {
	var out []*corev1.Service

	for _, svc := range all {
		if r.opts.Classes.Ours(svc) {
			out = append(out, svc)
		}
	}

	slices.SortFunc(out, func(a, b *corev1.Service) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}

		return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})

	return out
}

// rebuild loads what Services' status already holds. A claim that clashes
// with an older Service's is not loaded; the Service then gets a new IP in
// its allocate step, and an Event says why.
func (r *Reconciler) rebuild(ours []*corev1.Service, nsLabels map[string]map[string]string) {
	var claims []ipam.Claim

	for _, svc := range ours {
		ips, err := lbservice.StatusIPs(svc)
		if err != nil || len(ips) == 0 {
			continue
		}

		req, err := lbservice.Request(svc, nsLabels[svc.Namespace])
		if err != nil {
			continue
		}

		claims = append(claims, ipam.Claim{Request: req, IPs: ips})
	}

	byKey := map[ipam.ServiceKey]*corev1.Service{}
	for _, svc := range ours {
		byKey[lbservice.Key(svc)] = svc
	}

	for _, err := range r.alloc.Assign(claims) {
		var ce *ipam.ClaimError
		if errors.As(err, &ce) {
			if svc := byKey[ce.Service]; svc != nil {
				r.writer.Event(svc, corev1.EventTypeWarning, ReasonConflict, ce.Error())
			}
		}

		r.log.Warn("status claim not loaded", zap.Error(err))
	}

	r.log.Info("allocations rebuilt from Service status", zap.Int("claims", len(claims)))
}

// releaseGone frees the IPs of Services that are no longer ours: deleted,
// no longer LoadBalancer, or of another class.
func (r *Reconciler) releaseGone(ours []*corev1.Service) {
	keep := make(map[ipam.ServiceKey]bool, len(ours))
	for _, svc := range ours {
		keep[lbservice.Key(svc)] = true
	}

	for _, al := range r.alloc.Allocations() {
		if !keep[al.Service] {
			r.alloc.Release(al.Service)
			delete(r.failures, al.Service)
			r.log.Info("released", zap.Stringer("service", al.Service), zap.String("ips", lbservice.Describe(al.IPs)))
		}
	}

	for k := range r.failures {
		if !keep[k] {
			delete(r.failures, k)
		}
	}
}

func (r *Reconciler) allocate(ctx context.Context, svc *corev1.Service, nsLabels map[string]string, res *Result) error {
	key := lbservice.Key(svc)

	req, err := lbservice.Request(svc, nsLabels)
	if err == nil {
		var al ipam.Allocation

		al, err = r.alloc.Allocate(req)
		if err == nil {
			res.Allocations[key.String()] = al
			res.SharingKeys[key.String()] = req.SharingKey
			delete(r.failures, key)

			return r.writeStatus(ctx, svc, al)
		}
	}

	// On failure the Service keeps what it held (Allocate changes nothing), so
	// a bad edit does not take a working IP away.
	res.Errors[key.String()] = err.Error()

	if held, ok := r.alloc.Get(key); ok {
		res.Allocations[key.String()] = held
		res.SharingKeys[key.String()] = req.SharingKey
	}

	if r.failures[key] != err.Error() {
		r.failures[key] = err.Error()
		r.writer.Event(svc, corev1.EventTypeWarning, ReasonAllocationFailed, err.Error())
		r.log.Warn("allocation failed", zap.Stringer("service", key), zap.Error(err))
	}

	return nil
}

func (r *Reconciler) writeStatus(ctx context.Context, svc *corev1.Service, al ipam.Allocation) error {
	if lbservice.SameIngress(svc, al.IPs) {
		return nil
	}

	updated := svc.DeepCopy()
	updated.Status.LoadBalancer.Ingress = lbservice.Ingress(svc, al.IPs)

	if err := r.writer.UpdateServiceStatus(ctx, updated); err != nil {
		return fmt.Errorf("writing status of %s/%s: %w", svc.Namespace, svc.Name, err)
	}

	msg := fmt.Sprintf("Assigned %s", lbservice.Describe(al.IPs))
	if len(al.Pools) > 0 && al.Pools[0] != "" {
		msg += " from pool " + al.Pools[0]
	}

	r.writer.Event(svc, corev1.EventTypeNormal, ReasonAllocated, msg)
	r.log.Info("allocated", zap.String("service", svc.Namespace+"/"+svc.Name), zap.String("ips", lbservice.Describe(al.IPs)))

	return nil
}

func (r *Reconciler) desiredInput(cl *Cluster, cfg *Config, ours []*corev1.Service, res *Result) *desired.Input {
	in := &desired.Input{
		PoolLabels:         cfg.PoolLabels,
		L2:                 cfg.L2,
		BGP:                cfg.BGP,
		Peers:              cfg.Peers,
		IgnoreExcludeLabel: r.opts.IgnoreExcludeLabel,
	}

	for _, n := range cl.Nodes {
		in.Nodes = append(in.Nodes, desired.Node{Name: n.Name, Address: r.agentAddress(n), Labels: n.Labels, Ready: nodeReady(n)})
	}

	endpointNodes := readyEndpointNodes(cl.Slices)

	for _, svc := range ours {
		key := lbservice.Key(svc).String()

		al, ok := res.Allocations[key]
		if !ok {
			continue
		}

		in.Services = append(in.Services, desired.Service{
			Key:           key,
			IPs:           al.IPs,
			Pools:         al.Pools,
			LocalOnly:     lbservice.LocalOnly(svc),
			EndpointNodes: endpointNodes[key],
		})
	}

	in.APIEndpoints = apiEndpoints(cl.Slices)

	return in
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}

	return false
}

// AnnotationAgentEndpoint on a Node overrides where its agent listens
// (host:port), for agents on another address or port than the rest.
const AnnotationAgentEndpoint = "lb.talos-lb.dev/agent-endpoint"

// agentAddress is where the node's agent listens: the annotation, else its
// InternalIP (else ExternalIP) and the agent port. Empty when the Node has no
// address yet.
func (r *Reconciler) agentAddress(n *corev1.Node) string {
	if ep := n.Annotations[AnnotationAgentEndpoint]; ep != "" {
		return ep
	}

	for _, want := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type == want {
				return net.JoinHostPort(a.Address, strconv.Itoa(r.opts.AgentPort))
			}
		}
	}

	return ""
}

func ready(e *discoveryv1.Endpoint) bool {
	// A nil Ready means ready, as the API defines it.
	return e.Conditions.Ready == nil || *e.Conditions.Ready
}

// readyEndpointNodes maps namespace/service to the nodes with a ready endpoint of it.
func readyEndpointNodes(all []*discoveryv1.EndpointSlice) map[string][]string {
	out := map[string][]string{}

	for _, s := range all {
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}

		key := s.Namespace + "/" + svc

		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			if ready(e) && e.NodeName != nil && !slices.Contains(out[key], *e.NodeName) {
				out[key] = append(out[key], *e.NodeName)
			}
		}
	}

	return out
}

// apiEndpoints reads the API servers from the default/kubernetes EndpointSlices.
func apiEndpoints(all []*discoveryv1.EndpointSlice) []string {
	var out []string

	for _, s := range all {
		if s.Namespace != corev1.NamespaceDefault || s.Labels[discoveryv1.LabelServiceName] != "kubernetes" {
			continue
		}

		for _, p := range s.Ports {
			if p.Port == nil || (p.Name != nil && *p.Name != "https") {
				continue
			}

			for i := range s.Endpoints {
				if !ready(&s.Endpoints[i]) {
					continue
				}

				for _, a := range s.Endpoints[i].Addresses {
					if ip, err := netip.ParseAddr(a); err == nil {
						out = append(out, netip.AddrPortFrom(ip, uint16(*p.Port)).String()) //nolint:gosec // ports are 1-65535
					}
				}
			}
		}
	}

	slices.Sort(out)

	return slices.Compact(out)
}
