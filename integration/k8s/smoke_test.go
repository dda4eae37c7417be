//go:build k8s

// Package k8s_test is the k8s tier: a real kube-apiserver and etcd on loopback (package
// kapi), no kubelet and no controllers. Behind the "k8s" build tag; `make test-k8s` builds
// the binaries once (hack/kapi/build.sh) and runs it.
package k8s_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/talos-lb/talos-lb/integration/k8s/kapi"
)

// lbClass is the loadBalancerClass lb-controller serves.
const lbClass = "lb.talos-lb.dev/lb"

// TestSmoke checks that the apiserver stores what the controller's tests will build on:
// Nodes with a kubelet-like status, EndpointSlices, a LoadBalancer Service of our class
// (dual-stack), and its status.loadBalancer.ingress written through the status subresource.
func TestSmoke(t *testing.T) {
	c := kapi.Start(t)
	ctx := t.Context()
	ns := c.CreateNamespace(t, "smoke").Name

	node := c.CreateNode(t, "node-a", map[string]string{"kubernetes.io/hostname": "node-a"},
		[]string{"192.0.2.11", "2001:db8::11"}, true)
	if !nodeReady(node) || len(node.Status.Addresses) != 3 {
		t.Fatalf("node status not stored: %+v", node.Status)
	}

	if node = c.SetNodeReady(t, "node-a", false); nodeReady(node) {
		t.Fatal("node still Ready after SetNodeReady(false)")
	}

	if node = c.SetNodeReady(t, "node-a", true); !nodeReady(node) {
		t.Fatal("node not Ready after SetNodeReady(true)")
	}

	svc, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: new(lbClass),
			IPFamilyPolicy:    new(corev1.IPFamilyPolicyRequireDualStack),
			Selector:          map[string]string{"app": "web"},
			Ports:             []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a LoadBalancer Service of class %s: %v", lbClass, err)
	}

	if len(svc.Spec.ClusterIPs) != 2 || svc.Spec.Ports[0].NodePort == 0 {
		t.Errorf("service not allocated a dual-stack ClusterIP and a NodePort: %v, %+v", svc.Spec.ClusterIPs, svc.Spec.Ports)
	}

	slice := c.CreateEndpointSlice(t, ns, "web", []kapi.Endpoint{
		{IP: "10.244.0.5", NodeName: "node-a", Ready: true},
		{IP: "10.244.1.5", NodeName: "node-b", Ready: false},
	}, discoveryv1.EndpointPort{Name: new("http"), Port: new(int32(8080))})

	list, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=web",
	})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != slice.Name {
		t.Fatalf("EndpointSlice of web not found by its service label: %v %+v", err, list)
	}

	if eps := list.Items[0].Endpoints; len(eps) != 2 || !*eps[0].Conditions.Ready || *eps[1].Conditions.Ready ||
		*eps[0].NodeName != "node-a" {
		t.Errorf("endpoints not stored as created: %+v", eps)
	}

	got, err := c.Client.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	if got.Spec.LoadBalancerClass == nil || *got.Spec.LoadBalancerClass != lbClass {
		t.Fatalf("loadBalancerClass not stored: %v", got.Spec.LoadBalancerClass)
	}

	got.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
		{IP: "198.51.100.10", IPMode: new(corev1.LoadBalancerIPModeVIP)},
		{IP: "2001:db8:100::10", IPMode: new(corev1.LoadBalancerIPModeVIP)},
	}

	if _, err := c.Client.CoreV1().Services(ns).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("writing status.loadBalancer.ingress: %v", err)
	}

	got, err = c.Client.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	var ips []string
	for _, in := range got.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}

	if !slices.Equal(ips, []string{"198.51.100.10", "2001:db8:100::10"}) {
		t.Errorf("status.loadBalancer.ingress read back as %v", ips)
	}

	// The class is immutable once set: the controller may rely on it never changing under it.
	got.Spec.LoadBalancerClass = new("other.example/lb")
	if _, err := c.Client.CoreV1().Services(ns).Update(ctx, got, metav1.UpdateOptions{}); err == nil {
		t.Error("the apiserver let loadBalancerClass change")
	}

	// No EndpointSlice for default/kubernetes (the endpoint reconciler is off) until a test
	// makes one, as a controller reading the apiserver's endpoints needs.
	kube, err := c.Client.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=kubernetes",
	})
	if err != nil || len(kube.Items) != 0 {
		t.Errorf("default/kubernetes EndpointSlices: %v %d, want none", err, len(kube.Items))
	}
}

// TestApplyCRDs applies a multi-document file of two CRDs and uses one at once; and the
// project's own deploy/crds when they exist.
func TestApplyCRDs(t *testing.T) {
	c := kapi.Start(t)
	dir := t.TempDir()

	if err := os.WriteFile(filepath.Join(dir, "crds.yaml"), []byte(testCRDs), 0o600); err != nil {
		t.Fatal(err)
	}

	names := c.ApplyCRDs(t, dir)
	if !slices.Equal(names, []string{"widgets.test.talos-lb.dev", "gadgets.test.talos-lb.dev"}) {
		t.Fatalf("applied %v", names)
	}

	// Again: server-side apply is idempotent.
	c.ApplyCRDs(t, dir)

	widgets := c.Dynamic.Resource(schema.GroupVersionResource{Group: "test.talos-lb.dev", Version: "v1", Resource: "widgets"})
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "test.talos-lb.dev/v1",
		"kind":       "Widget",
		"metadata":   map[string]any{"name": "w"},
		"spec":       map[string]any{"size": int64(3)},
	}}

	if _, err := widgets.Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a Widget right after ApplyCRDs: %v", err)
	}

	obj.SetName("bad")
	obj.Object["spec"] = map[string]any{"size": "big"}

	if _, err := widgets.Create(context.Background(), obj, metav1.CreateOptions{}); err == nil {
		t.Error("the CRD's schema did not reject spec.size: big")
	} else {
		t.Logf("schema rejects as expected: %v", err)
	}

	crds := filepath.Join("..", "..", "deploy", "crds")
	if _, err := os.Stat(crds); err != nil {
		t.Logf("no %s yet: only the test CRDs applied", crds)

		return
	}

	t.Logf("deploy/crds: %v", c.ApplyCRDs(t, crds))
}

const testCRDs = `
# Two CRDs in one file, with an empty document between them.
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.talos-lb.dev
spec:
  group: test.talos-lb.dev
  scope: Cluster
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
---
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.test.talos-lb.dev
spec:
  group: test.talos-lb.dev
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
`

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}

	return false
}
