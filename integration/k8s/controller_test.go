//go:build k8s

package k8s_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/talos-lb/talos-lb/controller/app"
	"github.com/talos-lb/talos-lb/controller/crd"
	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/controller/push/pushtest"
	"github.com/talos-lb/talos-lb/controller/reconcile"
	"github.com/talos-lb/talos-lb/integration/k8s/kapi"
	"github.com/talos-lb/talos-lb/pkg/pki"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// env is one apiserver with our CRDs, in-process agents behind Nodes, and
// controllers started on demand.
type env struct {
	t      *testing.T
	c      *kapi.Cluster
	ca     *pki.KeyPair
	agents []pushtest.Agent
}

func newEnv(t *testing.T, nodes int) *env {
	t.Helper()

	c := kapi.Start(t)
	c.ApplyCRDs(t, "../../deploy/crds")

	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	e := &env{t: t, c: c, ca: ca, agents: pushtest.StartAgents(t, nodes, ca)}

	for i, a := range e.agents {
		c.CreateNode(t, a.Node, map[string]string{"kubernetes.io/hostname": a.Node, "rack": fmt.Sprintf("r%d", i%2)}, []string{fmt.Sprintf("192.0.2.%d", 11+i)}, true)
		e.annotateNode(a.Node, reconcile.AnnotationAgentEndpoint, a.Address)
	}

	return e
}

func (e *env) annotateNode(node, key, value string) {
	e.t.Helper()

	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if _, err := e.c.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) labelNode(node, key string, value *string) {
	e.t.Helper()

	v := "null"
	if value != nil {
		v = fmt.Sprintf("%q", *value)
	}

	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, key, v)
	if _, err := e.c.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

type controller struct {
	*app.Controller
	stop func()
}

// startController runs an in-process lb-controller replica; it is stopped
// before the apiserver (cleanups run in reverse).
func (e *env) startController(identity string, mod func(*app.Options)) *controller {
	e.t.Helper()

	opts := app.Options{
		Kube:           e.c.RESTConfig(),
		Classes:        lbservice.Classes{Class: lbClass},
		AgentPort:      50070,
		Identity:       identity,
		LeaseNamespace: "kube-system",
		LeaseName:      "talos-lb-controller",
		LeaseDuration:  2 * time.Second,
		RenewDeadline:  1500 * time.Millisecond,
		RetryPeriod:    200 * time.Millisecond,
		PushTLS:        pushtest.ControllerTLS(e.t, e.ca),
		Resync:         5 * time.Second,
		Registry:       prometheus.NewRegistry(),
		Logger:         zaptest.NewLogger(e.t).Named(identity),
	}
	if mod != nil {
		mod(&opts)
	}

	ctx, cancel := context.WithCancel(context.Background())

	c, err := app.New(ctx, opts)
	if err != nil {
		e.t.Fatal(err)
	}

	var wg sync.WaitGroup

	wg.Add(1)

	go func() {
		defer wg.Done()

		if err := c.Run(ctx); err != nil {
			e.t.Errorf("controller %s: %v", identity, err)
		}
	}()

	var once sync.Once

	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	e.t.Cleanup(stop)

	return &controller{Controller: c, stop: stop}
}

func (e *env) create(kind, ns, name string, spec map[string]any) {
	e.t.Helper()

	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crd.Group + "/" + crd.Version,
		"kind":       kind,
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}}

	if _, err := e.c.Dynamic.Resource(crd.Resources[kind]).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("creating %s %s/%s: %v", kind, ns, name, err)
	}
}

// pool makes a pool serving only namespace ns, so subtests do not share addresses.
func (e *env) pool(ns, name string, addresses ...string) {
	e.t.Helper()

	list := make([]any, len(addresses))
	for i, a := range addresses {
		list[i] = a
	}

	e.create(crd.KindIPAddressPool, ns, name, map[string]any{
		"addresses":         list,
		"serviceAllocation": map[string]any{"namespaces": []any{ns}},
	})
}

type svcOpt func(*corev1.Service)

func (e *env) service(ns, name string, opts ...svcOpt) {
	e.t.Helper()

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: new(lbClass),
			Ports:             []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, o := range opts {
		o(svc)
	}

	if _, err := e.c.Client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("creating service %s/%s: %v", ns, name, err)
	}
}

func (e *env) deleteService(ns, name string) {
	e.t.Helper()

	if err := e.c.Client.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) ips(ns, name string) []string {
	e.t.Helper()

	svc, err := e.c.Client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}

	var out []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		out = append(out, ing.IP)
	}

	return out
}

// eventually polls cond until it says yes, failing with its last explanation.
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()

	deadline := time.Now().Add(timeout)

	for {
		ok, why := cond()
		if ok {
			return
		}

		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, why)
		}

		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) waitIPs(ns, name string, want ...string) {
	e.t.Helper()

	eventually(e.t, 15*time.Second, func() (bool, string) {
		got := e.ips(ns, name)

		return slices.Equal(got, want), fmt.Sprintf("%s/%s has %v, want %v", ns, name, got, want)
	})
}

// stays checks that a Service keeps no address for a while.
func (e *env) staysEmpty(ns, name string) {
	e.t.Helper()

	time.Sleep(1500 * time.Millisecond)

	if got := e.ips(ns, name); len(got) != 0 {
		e.t.Fatalf("%s/%s got %v, want no address", ns, name, got)
	}
}

func (e *env) waitEvent(ns, name, reason, contains string) {
	e.t.Helper()

	eventually(e.t, 15*time.Second, func() (bool, string) {
		list, err := e.c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}

		var seen []string

		for _, ev := range list.Items {
			if ev.InvolvedObject.Name == name && ev.Reason == reason && strings.Contains(ev.Message, contains) {
				return true, ""
			}

			seen = append(seen, ev.InvolvedObject.Name+" "+ev.Reason+": "+ev.Message)
		}

		return false, fmt.Sprintf("no %s event containing %q on %s/%s; events: %v", reason, contains, ns, name, seen)
	})
}

// pushed returns the ServiceIP an in-process agent holds for addr, if any.
func pushed(t *testing.T, a pushtest.Agent, addr string) *resources.ServiceIP {
	t.Helper()

	r, err := safe.StateGetByID[*resources.ServiceIP](context.Background(), a.State, addr)
	if err != nil {
		return nil
	}

	return r
}

func withAnnotation(k, v string) svcOpt {
	return func(s *corev1.Service) { s.Annotations[k] = v }
}

func TestController(t *testing.T) {
	e := newEnv(t, 3)
	e.c.CreateNamespace(t, "other")

	// The replica runs with exactly the rights deploy/controller grants.
	applyManifest(t, e.c, controllerManifest)
	e.startController("replica-a", func(o *app.Options) {
		o.Kube.Impersonate = rest.ImpersonationConfig{UserName: controllerSA}
		o.LeaseNamespace = "talos-lb-system"
	})

	t.Run("allocate and release", func(t *testing.T) {
		ns := e.c.CreateNamespace(t, "alloc").Name
		e.pool(ns, "alloc", "198.51.100.0/30")
		e.create(crd.KindL2Advertisement, ns, "alloc-l2", map[string]any{"ipAddressPools": []any{"alloc"}})

		// avoidBuggyIPs is off: .0 is a valid first address.
		e.service(ns, "a")
		e.waitIPs(ns, "a", "198.51.100.0")
		e.waitEvent(ns, "a", reconcile.ReasonAllocated, "198.51.100.0")
		e.service(ns, "b")
		e.waitIPs(ns, "b", "198.51.100.1")

		e.deleteService(ns, "a")
		e.service(ns, "c", withAnnotation("lb.talos-lb.dev/loadBalancerIPs", "198.51.100.0"))
		e.waitIPs(ns, "c", "198.51.100.0")

		// Every agent holds the IP with the L2 node set naming all three nodes.
		eventually(t, 15*time.Second, func() (bool, string) {
			for _, a := range e.agents {
				r := pushed(t, a, "198.51.100.0")
				if r == nil || r.TypedSpec().Value.GetL2() == nil {
					return false, a.Node + " has no L2 ServiceIP 198.51.100.0"
				}
			}

			return true, ""
		})
	})

	t.Run("requested IPs", func(t *testing.T) {
		ns := e.c.CreateNamespace(t, "req").Name
		e.pool(ns, "req", "198.51.100.8/29")

		e.service(ns, "free", withAnnotation("lb.talos-lb.dev/loadBalancerIPs", "198.51.100.12"))
		e.waitIPs(ns, "free", "198.51.100.12")

		e.service(ns, "spec", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "198.51.100.13" })
		e.waitIPs(ns, "spec", "198.51.100.13")

		e.service(ns, "metallb", withAnnotation("metallb.io/loadBalancerIPs", "198.51.100.14"))
		e.waitIPs(ns, "metallb", "198.51.100.14")

		e.service(ns, "metallb-old", withAnnotation("metallb.universe.tf/loadBalancerIPs", "198.51.100.15"))
		e.waitIPs(ns, "metallb-old", "198.51.100.15")

		e.service(ns, "taken", withAnnotation("lb.talos-lb.dev/loadBalancerIPs", "198.51.100.12"))
		e.waitEvent(ns, "taken", reconcile.ReasonAllocationFailed, "198.51.100.12")
		e.staysEmpty(ns, "taken")

		e.service(ns, "outside", withAnnotation("lb.talos-lb.dev/loadBalancerIPs", "203.0.113.99"))
		e.waitEvent(ns, "outside", reconcile.ReasonAllocationFailed, "203.0.113.99")
		e.staysEmpty(ns, "outside")
	})

	t.Run("sharing", func(t *testing.T) {
		ns := e.c.CreateNamespace(t, "share").Name
		e.pool(ns, "share", "198.51.100.16/30")

		dns := func(port int32, proto corev1.Protocol) svcOpt {
			return func(s *corev1.Service) {
				s.Annotations[lbservice.AnnotationSharing] = "dns"
				s.Spec.Ports = []corev1.ServicePort{{Name: "p", Port: port, Protocol: proto}}
			}
		}

		e.service(ns, "dns-udp", dns(53, corev1.ProtocolUDP))
		e.waitIPs(ns, "dns-udp", "198.51.100.16")
		e.service(ns, "dns-tcp", dns(53, corev1.ProtocolTCP))
		e.waitIPs(ns, "dns-tcp", "198.51.100.16")

		// Same key, colliding port: a different address, never the shared one.
		e.service(ns, "dns-udp-2", dns(53, corev1.ProtocolUDP))
		e.waitIPs(ns, "dns-udp-2", "198.51.100.17")
	})

	t.Run("dual-stack", func(t *testing.T) {
		ns := e.c.CreateNamespace(t, "dual").Name
		e.pool(ns, "dual", "198.51.100.24/30", "2001:db8:1::/126")

		e.service(ns, "both", func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicyRequireDualStack)
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
		})
		e.waitIPs(ns, "both", "2001:db8:1::", "198.51.100.24")

		e.service(ns, "v6", func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		})
		e.waitIPs(ns, "v6", "2001:db8:1::1")
	})

	t.Run("exhaustion then freed", func(t *testing.T) {
		ns := e.c.CreateNamespace(t, "full").Name
		e.pool(ns, "full", "198.51.100.32/32")

		e.service(ns, "first")
		e.waitIPs(ns, "first", "198.51.100.32")
		e.service(ns, "second")
		e.waitEvent(ns, "second", reconcile.ReasonAllocationFailed, "")
		e.staysEmpty(ns, "second")

		e.deleteService(ns, "first")
		e.waitIPs(ns, "second", "198.51.100.32")
	})

	t.Run("foreign class untouched", func(t *testing.T) {
		ns := e.c.CreateNamespace(t, "foreign").Name
		e.pool(ns, "foreign", "198.51.100.40/30")

		e.service(ns, "metallb", func(s *corev1.Service) { s.Spec.LoadBalancerClass = new("metallb.io/metallb") })
		e.service(ns, "noclass", func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil })
		e.service(ns, "ours")
		e.waitIPs(ns, "ours", "198.51.100.40")
		e.staysEmpty(ns, "metallb")
		e.staysEmpty(ns, "noclass")
	})

	t.Run("invalid pool shows a condition naming the field", func(t *testing.T) {
		ns := e.c.CreateNamespace(t, "badpool").Name
		e.create(crd.KindIPAddressPool, ns, "bad", map[string]any{"addresses": []any{"10.0.0.0/33"}})

		eventually(t, 15*time.Second, func() (bool, string) {
			u, err := e.c.Dynamic.Resource(crd.Resources[crd.KindIPAddressPool]).Namespace(ns).Get(context.Background(), "bad", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}

			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Valid" && m["status"] == "False" && strings.Contains(fmt.Sprint(m["message"]), "spec.addresses[0]") {
					return true, ""
				}
			}

			return false, fmt.Sprintf("conditions: %v", conds)
		})
	})
}

// The no-class flag and the exclude label are controller options: each gets its own replica.
func TestControllerNoClassAndExcludeLabel(t *testing.T) {
	e := newEnv(t, 3)
	ns := e.c.CreateNamespace(t, "opts").Name
	e.pool(ns, "opts", "198.51.100.48/29")
	e.create(crd.KindL2Advertisement, ns, "opts-l2", nil)

	excluded := ""
	for _, a := range e.agents[:2] {
		e.labelNode(a.Node, "node.kubernetes.io/exclude-from-external-load-balancers", &excluded)
	}

	c := e.startController("replica-a", func(o *app.Options) { o.Classes.NoClass = true })

	e.service(ns, "noclass", func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil })
	e.waitIPs(ns, "noclass", "198.51.100.48")

	// Only the unlabelled node is ranked.
	eventually(t, 15*time.Second, func() (bool, string) {
		r, err := safe.StateGetByID[*resources.ServiceAllocation](context.Background(), c.State, ns+"/noclass")
		if err != nil {
			return false, err.Error()
		}

		got := r.TypedSpec().Value.GetRanking()

		return slices.Equal(got, []string{e.agents[2].Node}), fmt.Sprintf("ranking %v", got)
	})

	c.stop()

	// --ignore-exclude-label ranks all three; the address stays (rebuilt from status).
	c = e.startController("replica-b", func(o *app.Options) {
		o.Classes.NoClass = true
		o.IgnoreExcludeLabel = true
	})

	eventually(t, 15*time.Second, func() (bool, string) {
		r, err := safe.StateGetByID[*resources.ServiceAllocation](context.Background(), c.State, ns+"/noclass")
		if err != nil {
			return false, err.Error()
		}

		return len(r.TypedSpec().Value.GetRanking()) == 3, fmt.Sprintf("ranking %v", r.TypedSpec().Value.GetRanking())
	})
	e.waitIPs(ns, "noclass", "198.51.100.48")

	// All nodes excluded and no override: a loud warning in the controller's status.
	c.stop()

	for _, a := range e.agents[2:] {
		e.labelNode(a.Node, "node.kubernetes.io/exclude-from-external-load-balancers", &excluded)
	}

	c = e.startController("replica-c", func(o *app.Options) { o.Classes.NoClass = true })

	eventually(t, 15*time.Second, func() (bool, string) {
		r, err := safe.StateGetByID[*resources.ControllerStatus](context.Background(), c.State, resources.ControllerStatusID)
		if err != nil {
			return false, err.Error()
		}

		w := r.TypedSpec().Value.GetWarnings()

		return len(w) == 1 && strings.Contains(w[0], "--ignore-exclude-label"), fmt.Sprintf("warnings %v", w)
	})
}

func allocation(t *testing.T, c *controller, key string) *resources.ServiceAllocation {
	t.Helper()

	r, err := safe.StateGetByID[*resources.ServiceAllocation](context.Background(), c.State, key)
	if err != nil {
		return nil
	}

	return r
}

func TestControllerLocalTrafficPolicy(t *testing.T) {
	e := newEnv(t, 3)
	ns := e.c.CreateNamespace(t, "local").Name
	e.pool(ns, "local", "198.51.100.56/29")
	e.create(crd.KindL2Advertisement, ns, "local-l2", nil)
	c := e.startController("replica-a", nil)

	e.service(ns, "web", func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.Selector = map[string]string{"app": "web"}
	})
	e.waitIPs(ns, "web", "198.51.100.56")

	ranking := func(want ...string) {
		t.Helper()
		eventually(t, 15*time.Second, func() (bool, string) {
			r := allocation(t, c, ns+"/web")
			if r == nil {
				return false, "no allocation"
			}

			got := r.TypedSpec().Value.GetRanking()
			slices.Sort(got)

			return slices.Equal(got, want), fmt.Sprintf("ranking %v, want %v", got, want)
		})
	}

	// No endpoints yet: nobody may announce.
	ranking()

	n1, n2 := e.agents[1].Node, e.agents[2].Node
	e.c.CreateEndpointSlice(t, ns, "web", []kapi.Endpoint{{IP: "10.244.1.5", NodeName: n1, Ready: true}, {IP: "10.244.2.5", NodeName: n2, Ready: false}})
	ranking(n1)

	// The agents hold the per-service node set.
	eventually(t, 15*time.Second, func() (bool, string) {
		r := pushed(t, e.agents[0], "198.51.100.56")
		if r == nil || r.TypedSpec().Value.GetL2() == nil {
			return false, "no L2 ServiceIP on " + e.agents[0].Node
		}

		set := r.TypedSpec().Value.GetL2().GetNodeSet()

		return strings.HasSuffix(set, "/"+ns+"/web"), "node set " + set
	})
}

// Two replicas: one leads; when it stops the other takes over, keeps every
// address (rebuilt from Service status) and serves new Services.
func TestControllerLeaderFailover(t *testing.T) {
	e := newEnv(t, 2)
	ns := e.c.CreateNamespace(t, "ha").Name
	e.pool(ns, "ha", "198.51.100.64/29")
	e.create(crd.KindL2Advertisement, ns, "ha-l2", nil)

	a := e.startController("replica-a", nil)
	b := e.startController("replica-b", nil)

	leading := func(c *controller) bool {
		r, err := safe.StateGetByID[*resources.ControllerStatus](context.Background(), c.State, resources.ControllerStatusID)

		return err == nil && r.TypedSpec().Value.GetLeader()
	}

	var leader, standby *controller

	eventually(t, 15*time.Second, func() (bool, string) {
		switch {
		case leading(a) && !leading(b):
			leader, standby = a, b
		case leading(b) && !leading(a):
			leader, standby = b, a
		default:
			return false, fmt.Sprintf("leaders: a=%v b=%v", leading(a), leading(b))
		}

		return true, ""
	})

	for i := range 3 {
		e.service(ns, fmt.Sprintf("s%d", i))
	}

	for i := range 3 {
		e.waitIPs(ns, fmt.Sprintf("s%d", i), fmt.Sprintf("198.51.100.%d", 64+i))
	}

	start := time.Now()

	leader.stop()
	eventually(t, 15*time.Second, func() (bool, string) { return leading(standby), "standby not leading" })
	t.Logf("standby leads %s after the leader stopped", time.Since(start).Round(time.Millisecond))

	e.service(ns, "after")
	e.waitIPs(ns, "after", "198.51.100.67")

	for i := range 3 {
		e.waitIPs(ns, fmt.Sprintf("s%d", i), fmt.Sprintf("198.51.100.%d", 64+i))
	}

	// The new leader wrote nothing for the Services that already had addresses.
	list, err := e.c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}

	allocated := map[string]int{}

	for _, ev := range list.Items {
		if ev.Reason == reconcile.ReasonAllocated {
			allocated[ev.InvolvedObject.Name] += int(max(ev.Count, 1))
		}
	}

	for i := range 3 {
		if n := allocated[fmt.Sprintf("s%d", i)]; n != 1 {
			t.Errorf("s%d allocated %d times, want once: %v", i, n, allocated)
		}
	}

	// Every agent acked a push from the new leader.
	eventually(t, 15*time.Second, func() (bool, string) {
		for _, ag := range e.agents {
			r, err := safe.StateGetByID[*resources.PushStatus](context.Background(), ag.State, resources.PushStatusID)
			if err != nil || r.TypedSpec().Value.GetController() != standby.Identity() {
				return false, ag.Node + " not pushed by the new leader"
			}
		}

		return true, ""
	})
}
