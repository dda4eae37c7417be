//go:build k8s

package kapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/util/retry"
)

// FieldManager is the server-side-apply field manager of ApplyCRDs.
const FieldManager = "kapi-test"

const establishTimeout = 30 * time.Second

var crdResource = schema.GroupVersionResource{
	Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions",
}

// ApplyCRDs server-side-applies every CustomResourceDefinition in the .yaml, .yml and .json
// files of dir (multi-document YAML allowed; other kinds fail the test) and waits until each
// is Established, so its resources can be used at once. It returns the CRDs' names.
func (c *Cluster) ApplyCRDs(t testing.TB, dir string) []string {
	t.Helper()

	objs, err := readCRDs(dir)
	if err != nil {
		t.Fatalf("kapi: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), establishTimeout)
	defer cancel()

	var names []string

	for _, obj := range objs {
		if _, err := c.Dynamic.Resource(crdResource).Apply(ctx, obj.GetName(), obj,
			metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
			t.Fatalf("kapi: applying CRD %s: %v", obj.GetName(), err)
		}

		names = append(names, obj.GetName())
	}

	for _, name := range names {
		var last string

		err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			obj, err := c.Dynamic.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}

			established, why := crdEstablished(obj)
			last = why

			return established, nil
		})
		if err != nil {
			t.Fatalf("kapi: CRD %s not established: %v (%s)", name, err, last)
		}
	}

	return names
}

// readCRDs decodes the CRDs of dir's files, in file-name order.
func readCRDs(dir string) ([]*unstructured.Unstructured, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}

	var objs []*unstructured.Unstructured

	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}

		path := filepath.Join(dir, e.Name())

		docs, err := decodeAll(path)
		if err != nil {
			return nil, err
		}

		for i, obj := range docs {
			if gvk := obj.GroupVersionKind(); gvk.Group != crdResource.Group || gvk.Kind != "CustomResourceDefinition" {
				return nil, fmt.Errorf("%s: document %d is a %s, not a CustomResourceDefinition", path, i+1, gvk)
			}

			if obj.GetName() == "" {
				return nil, fmt.Errorf("%s: document %d has no metadata.name", path, i+1)
			}

			objs = append(objs, obj)
		}
	}

	if len(objs) == 0 {
		return nil, fmt.Errorf("no CustomResourceDefinition in %s", dir)
	}

	return objs, nil
}

// decodeAll reads every non-empty document of a YAML or JSON file.
func decodeAll(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	var objs []*unstructured.Unstructured

	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)

	for {
		var m map[string]any

		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}

		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, len(objs)+1, err)
		}

		if len(m) == 0 { // an empty document: "---" twice, or comments only
			continue
		}

		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// crdEstablished reports whether a CRD is Established, or else its conditions.
func crdEstablished(obj *unstructured.Unstructured) (bool, string) {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")

	var seen []string

	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok {
			continue
		}

		seen = append(seen, fmt.Sprintf("%v=%v %v", m["type"], m["status"], m["message"]))

		if m["type"] == "Established" && m["status"] == "True" {
			return true, ""
		}
	}

	return false, "conditions: " + strings.Join(seen, "; ")
}

// CreateNamespace creates a namespace.
func (c *Cluster) CreateNamespace(t testing.TB, name string) *corev1.Namespace {
	t.Helper()

	ns, err := c.Client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kapi: creating namespace %s: %v", name, err)
	}

	return ns
}

// CreateNode creates a Node with labels, then sets its status as a kubelet would: the
// addresses as InternalIP and the Ready condition. Nothing else ever changes that status:
// no node lifecycle controller runs.
func (c *Cluster) CreateNode(t testing.TB, name string, labels map[string]string, addresses []string, ready bool) *corev1.Node {
	t.Helper()

	ctx := context.Background()

	node, err := c.Client.CoreV1().Nodes().Create(ctx,
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kapi: creating node %s: %v", name, err)
	}

	for _, a := range addresses {
		if _, err := netip.ParseAddr(a); err != nil {
			t.Fatalf("kapi: node %s: address %q: %v", name, a, err)
		}

		node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}

	node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	setReady(node, ready)

	node, err = c.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("kapi: setting node %s's status: %v", name, err)
	}

	return node
}

// SetNodeReady sets a Node's Ready condition to True or False.
func (c *Cluster) SetNodeReady(t testing.TB, name string, ready bool) *corev1.Node {
	t.Helper()

	var node *corev1.Node

	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := c.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}

		setReady(n, ready)
		node, err = c.Client.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{})

		return err
	})
	if err != nil {
		t.Fatalf("kapi: setting node %s ready=%v: %v", name, ready, err)
	}

	return node
}

func setReady(node *corev1.Node, ready bool) {
	now := metav1.Now()
	cond := corev1.NodeCondition{
		Type:               corev1.NodeReady,
		Status:             corev1.ConditionFalse,
		LastHeartbeatTime:  now,
		LastTransitionTime: now,
		Reason:             "KubeletNotReady",
		Message:            "set by the test",
	}

	if ready {
		cond.Status, cond.Reason = corev1.ConditionTrue, "KubeletReady"
	}

	i := slices.IndexFunc(node.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == corev1.NodeReady })
	if i < 0 {
		node.Status.Conditions = append(node.Status.Conditions, cond)

		return
	}

	if node.Status.Conditions[i].Status == cond.Status {
		cond.LastTransitionTime = node.Status.Conditions[i].LastTransitionTime
	}

	node.Status.Conditions[i] = cond
}

// Endpoint is one endpoint of CreateEndpointSlice.
type Endpoint struct {
	IP       string
	NodeName string // empty: no node
	Ready    bool   // Ready and Serving; Terminating is always false
}

// CreateEndpointSlice creates an EndpointSlice of service in ns, as the EndpointSlice
// controller would (label kubernetes.io/service-name, a generated name), with the given
// endpoints and ports. The address type is IPv6 when the first endpoint's IP is, else IPv4;
// endpoints of the other family fail the test. For the apiserver's own endpoints (the agents'
// proxy) use ns "default", service "kubernetes" and a port named "https".
func (c *Cluster) CreateEndpointSlice(t testing.TB, ns, service string, endpoints []Endpoint, ports ...discoveryv1.EndpointPort) *discoveryv1.EndpointSlice {
	t.Helper()

	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: service + "-",
			Namespace:    ns,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: service,
				discoveryv1.LabelManagedBy:   "kapi.test",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
	}

	for i, e := range endpoints {
		ip, err := netip.ParseAddr(e.IP)
		if err != nil {
			t.Fatalf("kapi: endpoint %q: %v", e.IP, err)
		}

		typ := discoveryv1.AddressTypeIPv4
		if ip.Is6() {
			typ = discoveryv1.AddressTypeIPv6
		}

		if i == 0 {
			slice.AddressType = typ
		} else if typ != slice.AddressType {
			t.Fatalf("kapi: endpoint %s is %s in an %s EndpointSlice: make one slice per family", e.IP, typ, slice.AddressType)
		}

		ep := discoveryv1.Endpoint{
			Addresses: []string{ip.String()},
			Conditions: discoveryv1.EndpointConditions{
				Ready:       &e.Ready,
				Serving:     &e.Ready,
				Terminating: new(bool),
			},
		}

		if e.NodeName != "" {
			ep.NodeName = &e.NodeName
		}

		slice.Endpoints = append(slice.Endpoints, ep)
	}

	created, err := c.Client.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kapi: creating an EndpointSlice of %s/%s: %v", ns, service, err)
	}

	return created
}
