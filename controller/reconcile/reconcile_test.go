package reconcile_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/talos-lb/talos-lb/controller/desired"
	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/controller/reconcile"
	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// recorder is the Writer side-effect interface in memory: it applies status
// writes to the cluster snapshot, as the API server would.
type recorder struct {
	cl     *reconcile.Cluster
	events []string
	writes int
}

func (r *recorder) UpdateServiceStatus(_ context.Context, svc *corev1.Service) error {
	r.writes++

	for i, s := range r.cl.Services {
		if s.Namespace == svc.Namespace && s.Name == svc.Name {
			r.cl.Services[i] = svc
		}
	}

	return nil
}

func (r *recorder) Event(svc *corev1.Service, eventType, reason, message string) {
	r.events = append(r.events, fmt.Sprintf("%s/%s %s %s: %s", svc.Namespace, svc.Name, eventType, reason, message))
}

var class = lbservice.DefaultClass

func lbService(name string, age int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class,
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports:      []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
}

func readyNode(name, ip string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}},
		},
	}
}

func setup(t *testing.T, pool string) (*reconcile.Reconciler, *recorder, *reconcile.Cluster, *reconcile.Config) {
	cl := &reconcile.Cluster{Nodes: []*corev1.Node{readyNode("n1", "10.0.0.1"), readyNode("n2", "10.0.0.2")}}
	rec := &recorder{cl: cl}
	cfg := &reconcile.Config{Pools: []ipam.Pool{{Name: "a", Addresses: []string{pool}, AutoAssign: true}}, L2: []desired.L2Rule{{Name: "l2"}}}
	r := reconcile.New(reconcile.Options{Classes: lbservice.Classes{Class: class}, AgentPort: 50070}, ipam.New(), rec, zaptest.NewLogger(t))

	return r, rec, cl, cfg
}

func TestAllocateWriteStatusAndDesired(t *testing.T) {
	r, rec, cl, cfg := setup(t, "192.0.2.10-192.0.2.11")
	cl.Services = []*corev1.Service{lbService("web", 0)}

	res, err := r.Pass(t.Context(), cl, cfg)
	require.NoError(t, err)
	require.Equal(t, "192.0.2.10", cl.Services[0].Status.LoadBalancer.Ingress[0].IP)
	require.Contains(t, rec.events[0], "IPAllocated: Assigned 192.0.2.10 from pool a")
	require.Equal(t, "10.0.0.2:50070", res.Desired.Nodes["n2"].Address)
	require.Equal(t, "192.0.2.10", res.Desired.Shared.ServiceIps[0].Address)

	// A second pass changes nothing.
	_, err = r.Pass(t.Context(), cl, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, rec.writes)
}

func TestExhaustionEventOnceThenRetryWhenFreed(t *testing.T) {
	r, rec, cl, cfg := setup(t, "192.0.2.10/32")
	cl.Services = []*corev1.Service{lbService("first", 0), lbService("second", 1)}

	for range 3 {
		res, err := r.Pass(t.Context(), cl, cfg)
		require.NoError(t, err)
		require.Contains(t, res.Errors["default/second"], "no free")
	}

	failed := 0
	for _, e := range rec.events {
		if strings.Contains(e, "AllocationFailed") {
			failed++
		}
	}

	require.Equal(t, 1, failed, "one Event for a stuck Service: %v", rec.events)

	cl.Services = cl.Services[1:]
	_, err := r.Pass(t.Context(), cl, cfg)
	require.NoError(t, err)
	require.Equal(t, "192.0.2.10", cl.Services[0].Status.LoadBalancer.Ingress[0].IP)
}

func TestRebuildFromStatusKeepsIPs(t *testing.T) {
	r, rec, cl, cfg := setup(t, "192.0.2.10-192.0.2.20")
	held := lbService("held", 1)
	held.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.15"}}
	cl.Services = []*corev1.Service{lbService("new", 0), held}

	_, err := r.Pass(t.Context(), cl, cfg)
	require.NoError(t, err)
	require.Equal(t, "192.0.2.10", cl.Services[0].Status.LoadBalancer.Ingress[0].IP)
	require.Equal(t, "192.0.2.15", cl.Services[1].Status.LoadBalancer.Ingress[0].IP, "the IP in status is kept")
	require.Equal(t, 1, rec.writes, "nothing rewritten for the held Service")
}

func TestConflictingClaimsOldestWins(t *testing.T) {
	r, rec, cl, cfg := setup(t, "192.0.2.10-192.0.2.20")
	older, newer := lbService("older", 0), lbService("newer", 1)

	for _, s := range []*corev1.Service{older, newer} {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.12"}}
	}

	cl.Services = []*corev1.Service{newer, older}

	_, err := r.Pass(t.Context(), cl, cfg)
	require.NoError(t, err)
	require.Equal(t, "192.0.2.10", cl.Services[0].Status.LoadBalancer.Ingress[0].IP, "the newer Service moves")
	require.Equal(t, "192.0.2.12", cl.Services[1].Status.LoadBalancer.Ingress[0].IP)
	require.Contains(t, rec.events[0], "default/newer Warning IPConflict")
}

func TestForeignClassUntouchedAndReleaseOnClassChange(t *testing.T) {
	r, rec, cl, cfg := setup(t, "192.0.2.10/32")
	other := "example.com/other"
	foreign := lbService("foreign", 0)
	foreign.Spec.LoadBalancerClass = &other
	noClass := lbService("noclass", 0)
	noClass.Spec.LoadBalancerClass = nil
	mine := lbService("mine", 1)
	cl.Services = []*corev1.Service{foreign, noClass, mine}

	_, err := r.Pass(t.Context(), cl, cfg)
	require.NoError(t, err)
	require.Empty(t, cl.Services[0].Status.LoadBalancer.Ingress)
	require.Empty(t, cl.Services[1].Status.LoadBalancer.Ingress)
	require.Equal(t, "192.0.2.10", cl.Services[2].Status.LoadBalancer.Ingress[0].IP)
	require.Len(t, rec.events, 1)

	// mine becomes a ClusterIP Service: its IP is free for the next one.
	cl.Services[2] = cl.Services[2].DeepCopy()
	cl.Services[2].Spec.Type = corev1.ServiceTypeClusterIP
	cl.Services = append(cl.Services, lbService("next", 2))

	_, err = r.Pass(t.Context(), cl, cfg)
	require.NoError(t, err)
	require.Equal(t, "192.0.2.10", cl.Services[3].Status.LoadBalancer.Ingress[0].IP)
}

func TestEndpointsAndAPIServers(t *testing.T) {
	r, _, cl, cfg := setup(t, "192.0.2.10/32")
	svc := lbService("web", 0)
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	cl.Services = []*corev1.Service{svc}

	n2, notReady, port, https := "n2", false, int32(6443), "https"
	cl.Slices = []*discoveryv1.EndpointSlice{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-x", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.244.1.5"}, NodeName: &n2},
				{Addresses: []string{"10.244.0.5"}, NodeName: ptr("n1"), Conditions: discoveryv1.EndpointConditions{Ready: &notReady}},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes", Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"}},
			Ports:      []discoveryv1.EndpointPort{{Name: &https, Port: &port}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}, {Addresses: []string{"10.0.0.2"}}},
		},
	}

	res, err := r.Pass(t.Context(), cl, cfg)
	require.NoError(t, err)
	require.Equal(t, []string{"n2"}, res.Desired.Services["default/web"].Ranking)
	require.Equal(t, []string{"10.0.0.1:6443", "10.0.0.2:6443"}, res.Desired.Shared.ApiEndpoints)
}

func ptr[T any](v T) *T { return &v }
