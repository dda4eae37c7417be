package crd_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/talos-lb/talos-lb/controller/crd"
)

// Every example of ours in docs/controller-crds.md is valid, passes the CRD
// schema, and the examples together compile without problems (their
// references resolve).
func TestDocExamples(t *testing.T) {
	data, err := os.ReadFile("../../docs/controller-crds.md")
	if err != nil {
		t.Fatal(err)
	}

	crds := loadCRDs(t)

	var objs []*unstructured.Unstructured

	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(data), -1)
	for _, b := range blocks {
		for doc := range strings.SplitSeq(b[1], "\n---\n") {
			u := obj(t, doc)
			if u.GetAPIVersion() != crd.APIVersion {
				continue // a Secret, or a MetalLB object
			}

			o, err := crd.Parse(u)
			if err != nil {
				t.Errorf("example: %v", err)
				continue
			}

			checked := obj(t, doc)
			applyDefaults(crds[u.GetKind()].Spec.Versions[0].Schema.OpenAPIV3Schema, "", checked.Object, map[string]bool{})

			for _, e := range schemaErrors(crds[u.GetKind()].Spec.Versions[0].Schema.OpenAPIV3Schema, "", checked.Object) {
				t.Errorf("%s: schema: %s", o.Ref(), e)
			}

			objs = append(objs, u)
		}
	}

	if len(objs) < 6 {
		t.Fatalf("only %d examples found", len(objs))
	}

	if _, problems := crd.Build(objs); len(problems.Errors)+len(problems.Warnings) > 0 {
		t.Errorf("examples together: %v %v", problems.Errors, problems.Warnings)
	}
}
