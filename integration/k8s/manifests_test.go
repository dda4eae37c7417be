//go:build k8s

package k8s_test

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"

	"github.com/talos-lb/talos-lb/integration/k8s/kapi"
)

// controllerManifest is what an operator applies to run lb-controller.
const controllerManifest = "../../deploy/controller/lb-controller.yaml"

// controllerSA is the identity the manifest gives lb-controller.
const controllerSA = "system:serviceaccount:talos-lb-system:lb-controller"

// applyManifest server-side-applies every object of a YAML file, so the
// apiserver validates it as `kubectl apply` would.
func applyManifest(t *testing.T, c *kapi.Cluster, path string) {
	t.Helper()

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() //nolint:errcheck

	disco, err := discovery.NewDiscoveryClientForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}

	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)

	for {
		var m map[string]any

		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return
		}

		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}

		if len(m) == 0 {
			continue
		}

		obj := &unstructured.Unstructured{Object: m}
		gvk := obj.GroupVersionKind()

		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %s %s: %v", path, gvk, obj.GetName(), err)
		}

		res := c.Dynamic.Resource(mapping.Resource)

		var client interface {
			Apply(context.Context, string, *unstructured.Unstructured, metav1.ApplyOptions, ...string) (*unstructured.Unstructured, error)
		} = res
		if obj.GetNamespace() != "" {
			client = res.Namespace(obj.GetNamespace())
		}

		if _, err := client.Apply(context.Background(), obj.GetName(), obj, metav1.ApplyOptions{FieldManager: "talos-lb-test", Force: true}); err != nil {
			t.Fatalf("%s: applying %s %s: %v", path, gvk.Kind, obj.GetName(), err)
		}
	}
}
