package crd_test

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/talos-lb/talos-lb/controller/crd"
)

// obj reads one YAML document the way the dynamic client would hand it over.
func obj(t testing.TB, doc string) *unstructured.Unstructured {
	t.Helper()

	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("test YAML: %v\n%s", err, doc)
	}

	return &unstructured.Unstructured{Object: m}
}

// withSpec is an object of kind named default/<name> with the given spec
// (YAML, indented by two spaces under "spec:").
func withSpec(t testing.TB, kind, name, spec string) *unstructured.Unstructured {
	t.Helper()

	doc := "apiVersion: lb.talos-lb.dev/v1alpha1\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n  namespace: default\n"
	if spec != "" {
		doc += "spec:\n" + indent(spec, "  ")
	}

	return obj(t, doc)
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}

	return strings.Join(lines, "\n") + "\n"
}

// fieldErrors are the field errors of a Parse error, which must be an
// *crd.InvalidError.
func fieldErrors(t testing.TB, err error) []*crd.FieldError {
	t.Helper()

	var ie *crd.InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T) is not an *InvalidError", err, err)
	}

	return ie.Fields
}

// mustParse parses an object that must be valid.
func mustParse(t testing.TB, u *unstructured.Unstructured) crd.Object {
	t.Helper()

	o, err := crd.Parse(u)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}

	return o
}
