package crd_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/talos-lb/talos-lb/controller/crd"
)

// The CRD manifests are hand-written; these tests hold them to the Go types
// (every JSON field and no other, same types, required exactly where the Go
// field has no omitempty, integer bounds inside the Go type), to the Go
// defaults, and to the rules of structural schemas that can be checked
// without an API server. integration/k8s applies them to a real one.

const crdDir = "../../deploy/crds"

// crdFile mirrors the parts of apiextensions.k8s.io/v1 CustomResourceDefinition
// the manifests use; decoding with KnownFields catches any other key.
type crdFile struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		Group string `yaml:"group"`
		Names struct {
			Kind       string   `yaml:"kind"`
			ListKind   string   `yaml:"listKind"`
			Plural     string   `yaml:"plural"`
			Singular   string   `yaml:"singular"`
			ShortNames []string `yaml:"shortNames"`
			Categories []string `yaml:"categories"`
		} `yaml:"names"`
		Scope    string `yaml:"scope"`
		Versions []struct {
			Name         string `yaml:"name"`
			Served       bool   `yaml:"served"`
			Storage      bool   `yaml:"storage"`
			Subresources struct {
				Status *struct{} `yaml:"status"`
			} `yaml:"subresources"`
			AdditionalPrinterColumns []struct {
				Name        string `yaml:"name"`
				Type        string `yaml:"type"`
				JSONPath    string `yaml:"jsonPath"`
				Priority    int    `yaml:"priority"`
				Description string `yaml:"description"`
			} `yaml:"additionalPrinterColumns"`
			Schema struct {
				OpenAPIV3Schema *schema `yaml:"openAPIV3Schema"`
			} `yaml:"schema"`
		} `yaml:"versions"`
	} `yaml:"spec"`
}

// schema is the subset of JSON schema the manifests use.
type schema struct {
	Type                 string             `yaml:"type"`
	Description          string             `yaml:"description"`
	Format               string             `yaml:"format"`
	Properties           map[string]*schema `yaml:"properties"`
	AdditionalProperties *schema            `yaml:"additionalProperties"`
	Items                *schema            `yaml:"items"`
	Required             []string           `yaml:"required"`
	Default              any                `yaml:"default"`
	Enum                 []any              `yaml:"enum"`
	Minimum              *float64           `yaml:"minimum"`
	Maximum              *float64           `yaml:"maximum"`
	MinItems             *int               `yaml:"minItems"`
	MinLength            *int               `yaml:"minLength"`
	MaxLength            *int               `yaml:"maxLength"`
	Pattern              string             `yaml:"pattern"`
	ListType             string             `yaml:"x-kubernetes-list-type"`
	ListMapKeys          []string           `yaml:"x-kubernetes-list-map-keys"`
	MapType              string             `yaml:"x-kubernetes-map-type"`
	Validations          []struct {
		Rule    string `yaml:"rule"`
		Message string `yaml:"message"`
	} `yaml:"x-kubernetes-validations"`
}

var (
	kindTypes = map[string]reflect.Type{
		crd.KindIPAddressPool:    reflect.TypeFor[crd.IPAddressPool](),
		crd.KindBGPPeer:          reflect.TypeFor[crd.BGPPeer](),
		crd.KindBGPAdvertisement: reflect.TypeFor[crd.BGPAdvertisement](),
		crd.KindL2Advertisement:  reflect.TypeFor[crd.L2Advertisement](),
	}
	shortNames = map[string]string{
		crd.KindIPAddressPool:    "lbpool",
		crd.KindBGPPeer:          "lbpeer",
		crd.KindBGPAdvertisement: "lbbgpadv",
		crd.KindL2Advertisement:  "lbl2adv",
	}
)

// loadCRDs reads every manifest, keyed by kind; each file must be named
// after its resource.
func loadCRDs(t *testing.T) map[string]*crdFile {
	t.Helper()

	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s: %v", crdDir, err)
	}

	out := map[string]*crdFile{}

	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}

		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)

		c := &crdFile{}
		if err := dec.Decode(c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}

		if _, ok := out[c.Spec.Names.Kind]; ok {
			t.Fatalf("%s: second CRD for %s", f, c.Spec.Names.Kind)
		}

		if want := fmt.Sprintf("lb.talos-lb.dev_%s.yaml", c.Spec.Names.Plural); filepath.Base(f) != want {
			t.Errorf("%s should be named %s", f, want)
		}

		out[c.Spec.Names.Kind] = c
	}

	if got := slices.Sorted(maps.Keys(out)); !slices.Equal(got, slices.Sorted(maps.Keys(kindTypes))) {
		t.Fatalf("CRDs for %v, want %v", got, slices.Sorted(maps.Keys(kindTypes)))
	}

	return out
}

func TestCRDManifests(t *testing.T) {
	for kind, c := range loadCRDs(t) {
		t.Run(kind, func(t *testing.T) {
			gvr := crd.Resources[kind]
			n := c.Spec.Names

			switch {
			case c.APIVersion != "apiextensions.k8s.io/v1" || c.Kind != "CustomResourceDefinition":
				t.Errorf("apiVersion/kind %s %s", c.APIVersion, c.Kind)
			case c.Spec.Group != crd.Group || c.Metadata.Name != n.Plural+"."+crd.Group:
				t.Errorf("group %s, name %s", c.Spec.Group, c.Metadata.Name)
			case n.Plural != gvr.Resource || n.ListKind != kind+"List" || n.Singular != strings.ToLower(kind):
				t.Errorf("names %+v, want plural %s", n, gvr.Resource)
			case !slices.Equal(n.ShortNames, []string{shortNames[kind]}) || !slices.Contains(n.Categories, "talos-lb"):
				t.Errorf("short names %v, categories %v", n.ShortNames, n.Categories)
			case c.Spec.Scope != "Namespaced":
				t.Errorf("scope %s", c.Spec.Scope)
			case len(c.Spec.Versions) != 1:
				t.Fatalf("%d versions", len(c.Spec.Versions))
			}

			v := c.Spec.Versions[0]
			if v.Name != crd.Version || !v.Served || !v.Storage || v.Subresources.Status == nil {
				t.Errorf("version %s served %v storage %v status subresource %v", v.Name, v.Served, v.Storage, v.Subresources.Status != nil)
			}

			root := v.Schema.OpenAPIV3Schema
			if root == nil {
				t.Fatal("no openAPIV3Schema")
			}

			checkStructural(t, "", root)

			if got := slices.Sorted(maps.Keys(root.Properties)); !slices.Equal(got, []string{"apiVersion", "kind", "metadata", "spec", "status"}) {
				t.Errorf("top-level properties %v", got)
			}

			typ := kindTypes[kind]
			specField, _ := typ.FieldByName("Spec")
			statusField, _ := typ.FieldByName("Status")

			compareSchema(t, "spec", root.Properties["spec"], specField.Type)
			compareSchema(t, "status", root.Properties["status"], statusField.Type)

			if wantRequired := !strings.Contains(specField.Tag.Get("json"), "omitempty"); slices.Contains(root.Required, "spec") != wantRequired {
				t.Errorf("spec required %v, Go says %v", root.Required, wantRequired)
			}

			names := map[string]bool{}

			for _, col := range v.AdditionalPrinterColumns {
				if names[col.Name] {
					t.Errorf("column %q twice", col.Name)
				}

				names[col.Name] = true

				if !slices.Contains([]string{"string", "integer", "number", "boolean", "date"}, col.Type) {
					t.Errorf("column %s: type %s", col.Name, col.Type)
				}

				if s := resolve(root, col.JSONPath); s == nil {
					t.Errorf("column %s: %s is not in the schema", col.Name, col.JSONPath)
				} else if want := columnType(s); col.Type != want && col.Type != "string" && col.Type != "date" {
					t.Errorf("column %s: type %s, schema says %s", col.Name, col.Type, want)
				}
			}

			if !names["Valid"] || !names["Age"] {
				t.Errorf("columns %v lack Valid or Age", names)
			}
		})
	}
}

// checkStructural applies the rules of structural schemas that matter here:
// every node has a type, and nothing preserves unknown fields (the decoder
// would have refused x-kubernetes-preserve-unknown-fields already).
func checkStructural(t *testing.T, path string, s *schema) {
	t.Helper()

	if s.Type == "" {
		t.Errorf("%s: no type", path)
	}

	if s.Type != "object" && (s.Properties != nil || s.AdditionalProperties != nil) {
		t.Errorf("%s: properties on a %s", path, s.Type)
	}

	if s.Properties != nil && s.AdditionalProperties != nil {
		t.Errorf("%s: both properties and additionalProperties", path)
	}

	if (s.Type == "array") != (s.Items != nil) {
		t.Errorf("%s: type %s with items %v", path, s.Type, s.Items != nil)
	}

	for _, r := range s.Required {
		if s.Properties[r] == nil {
			t.Errorf("%s: required %s is not a property", path, r)
		}
	}

	if s.Pattern != "" {
		if _, err := regexp.Compile(s.Pattern); err != nil {
			t.Errorf("%s: pattern: %v", path, err)
		}
	}

	for k, p := range s.Properties {
		checkStructural(t, path+"."+k, p)
	}

	if s.AdditionalProperties != nil {
		checkStructural(t, path+".*", s.AdditionalProperties)
	}

	if s.Items != nil {
		checkStructural(t, path+"[]", s.Items)
	}
}

var (
	durationType = reflect.TypeFor[metav1.Duration]()
	timeType     = reflect.TypeFor[metav1.Time]()
)

// compareSchema holds a schema node to a Go type.
func compareSchema(t *testing.T, path string, s *schema, typ reflect.Type) {
	t.Helper()

	if s == nil {
		t.Errorf("%s: in the Go type (%s), not in the schema", path, typ)
		return
	}

	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}

	want := ""

	switch {
	case typ == durationType:
		want = "string"
	case typ == timeType:
		want = "string"

		if s.Format != "date-time" {
			t.Errorf("%s: format %q, want date-time", path, s.Format)
		}
	case typ.Kind() == reflect.Struct:
		want = "object"
		compareStruct(t, path, s, typ)
	case typ.Kind() == reflect.Slice:
		want = "array"

		if s.Items != nil {
			compareSchema(t, path+"[]", s.Items, typ.Elem())
		}
	case typ.Kind() == reflect.Map:
		want = "object"

		if s.AdditionalProperties == nil {
			t.Errorf("%s: a map without additionalProperties", path)
		} else {
			compareSchema(t, path+".*", s.AdditionalProperties, typ.Elem())
		}
	case typ.Kind() == reflect.String:
		want = "string"
	case typ.Kind() == reflect.Bool:
		want = "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		want = "integer"
		compareBounds(t, path, s, typ)
	default:
		t.Errorf("%s: Go type %s has no schema counterpart here", path, typ)
	}

	if s.Type != want {
		t.Errorf("%s: schema type %q, Go type %s wants %q", path, s.Type, typ, want)
	}

	if s.Default != nil && want == "object" {
		t.Errorf("%s: an object default", path)
	}
}

func compareStruct(t *testing.T, path string, s *schema, typ reflect.Type) {
	t.Helper()

	var required []string

	fields := map[string]reflect.StructField{}

	for i := range typ.NumField() {
		f := typ.Field(i)

		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")

		if !f.IsExported() || name == "-" || name == "" {
			continue
		}

		fields[name] = f

		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}

	for name, f := range fields {
		compareSchema(t, path+"."+name, s.Properties[name], f.Type)
	}

	for name := range s.Properties {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s.%s: in the schema, not in the Go type %s", path, name, typ)
		}
	}

	if !slices.Equal(slices.Sorted(slices.Values(required)), slices.Sorted(slices.Values(s.Required))) {
		t.Errorf("%s: schema requires %v, Go (fields without omitempty) %v", path, s.Required, required)
	}
}

// compareBounds wants integer bounds inside the Go type's range, and
// explicit for types narrower than 64 bits (else the API server would store
// what the controller cannot read).
func compareBounds(t *testing.T, path string, s *schema, typ reflect.Type) {
	t.Helper()

	var lo, hi float64

	if typ.Kind() >= reflect.Uint {
		lo, hi = 0, math.Pow(2, float64(typ.Bits()))-1
	} else {
		lo, hi = -math.Pow(2, float64(typ.Bits()-1)), math.Pow(2, float64(typ.Bits()-1))-1
	}

	if typ.Bits() < 64 && (s.Minimum == nil || s.Maximum == nil) {
		t.Errorf("%s: %s needs minimum and maximum", path, typ)
	}

	if s.Minimum != nil && *s.Minimum < lo || s.Maximum != nil && *s.Maximum > hi {
		t.Errorf("%s: bounds %v..%v outside %s", path, deref(s.Minimum), deref(s.Maximum), typ)
	}
}

func deref(f *float64) any {
	if f == nil {
		return "none"
	}

	return *f
}

// resolve follows a printer column's JSONPath (".spec.a.b", with [...]
// filters on lists) through the schema; metadata counts as known.
func resolve(root *schema, path string) *schema {
	if strings.HasPrefix(path, ".metadata.") {
		return &schema{Type: "string"}
	}

	s := root
	path = regexp.MustCompile(`\[[^\]]*\]`).ReplaceAllString(path, "[]")

	for part := range strings.SplitSeq(strings.TrimPrefix(path, "."), ".") {
		name, filter, _ := strings.Cut(part, "[")

		s = s.Properties[name]
		if s == nil {
			return nil
		}

		if filter != "" {
			if s.Items == nil {
				return nil
			}

			s = s.Items
		}
	}

	return s
}

func columnType(s *schema) string {
	if s.Type == "array" || s.Type == "object" {
		return "string"
	}

	return s.Type
}

// minimal are the smallest valid objects, with the optional nested objects
// that carry defaults present but empty.
var minimal = map[string]string{
	crd.KindIPAddressPool:    "addresses: [10.0.0.0/24]",
	crd.KindBGPPeer:          "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\npasswordSecret: {name: bgp}\nbfd: {}\ngracefulRestart: {}",
	crd.KindBGPAdvertisement: "{}",
	crd.KindL2Advertisement:  "{}",
}

// The schema's defaults are the Go defaults: an object defaulted by the
// schema (as the API server stores it) parses to the same thing as one the
// Go side defaulted alone. Every default in the schema must be exercised.
func TestCRDDefaultsMatchGo(t *testing.T) {
	for kind, c := range loadCRDs(t) {
		t.Run(kind, func(t *testing.T) {
			root := c.Spec.Versions[0].Schema.OpenAPIV3Schema

			plain := withSpec(t, kind, "obj", minimal[kind])
			defaulted := withSpec(t, kind, "obj", minimal[kind])

			applied := map[string]bool{}
			applyDefaults(root, "", defaulted.Object, applied)

			want := mustParse(t, plain)
			got := mustParse(t, defaulted)

			if !reflect.DeepEqual(want, got) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				t.Errorf("schema defaults give\n%s\nGo defaults\n%s", g, w)
			}

			for _, d := range defaultPaths(root, "") {
				if !applied[d] {
					t.Errorf("default at %s not exercised by the minimal %s", d, kind)
				}
			}
		})
	}
}

// applyDefaults does what the API server does: fill in absent properties
// with their defaults, in objects that are present.
func applyDefaults(s *schema, path string, v any, applied map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, p := range s.Properties {
			if _, ok := v[k]; !ok && p.Default != nil {
				v[k] = p.Default
				applied[path+"."+k] = true
			}

			if child, ok := v[k]; ok {
				applyDefaults(p, path+"."+k, child, applied)
			}
		}
	case []any:
		if s.Items != nil {
			for _, e := range v {
				applyDefaults(s.Items, path+"[]", e, applied)
			}
		}
	}
}

func defaultPaths(s *schema, path string) []string {
	var out []string

	if s.Default != nil {
		out = append(out, path)
	}

	for k, p := range s.Properties {
		out = append(out, defaultPaths(p, path+"."+k)...)
	}

	if s.Items != nil {
		out = append(out, defaultPaths(s.Items, path+"[]")...)
	}

	return out
}

// Objects the Go side accepts pass the schema too (the full examples, with
// their defaults applied as the API server would).
func TestCRDSchemaAcceptsValidObjects(t *testing.T) {
	crds := loadCRDs(t)

	for kind, doc := range full {
		t.Run(kind, func(t *testing.T) {
			u := obj(t, doc)
			if kind == crd.KindBGPPeer {
				delete(u.Object["spec"].(map[string]any), "password")
			}

			mustParse(t, u)

			root := crds[kind].Spec.Versions[0].Schema.OpenAPIV3Schema
			applyDefaults(root, "", u.Object, map[string]bool{})

			for _, err := range schemaErrors(root, "", u.Object) {
				t.Error(err)
			}
		})
	}
}

// The schema rejects on its own what it can cheaply tell is wrong.
func TestCRDSchemaRejects(t *testing.T) {
	crds := loadCRDs(t)

	cases := []struct{ kind, spec, want string }{
		{crd.KindIPAddressPool, "addresses: []", ".spec.addresses: fewer than 1 items"},
		{crd.KindIPAddressPool, "autoAssign: true", ".spec: addresses is required"},
		{crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nserviceAllocation: {priority: -1}", ".spec.serviceAllocation.priority: -1 below 0"},
		{crd.KindBGPPeer, "myASN: 0\npeerASN: 65001\npeerAddress: 10.0.0.1", ".spec.myASN: 0 below 1"},
		{crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\npeerPort: 70000", ".spec.peerPort: 70000 above 65535"},
		{crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nadress: x", ".spec.adress: unknown field"},
		{crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nnodeSelectors: [{matchExpressions: [{key: a, operator: Maybe}]}]", "operator: Maybe not in"},
		{crd.KindBGPAdvertisement, "largeCommunities: ['1:2']", "does not match"},
		{crd.KindBGPAdvertisement, "aggregationLength: 33", "33 above 32"},
		{crd.KindL2Advertisement, "interfaces: [this-is-too-long-0]", "longer than 15"},
	}

	for _, c := range cases {
		u := withSpec(t, c.kind, "obj", c.spec)
		errs := schemaErrors(crds[c.kind].Spec.Versions[0].Schema.OpenAPIV3Schema, "", u.Object)

		if !strings.Contains(strings.Join(errs, "\n"), c.want) {
			t.Errorf("%s %q: schema errors %q, want %q", c.kind, c.spec, errs, c.want)
		}
	}
}

// schemaErrors is a small validator for the keywords the manifests use
// (not CEL rules); metadata is left to the API server.
func schemaErrors(s *schema, path string, v any) []string {
	var errs []string

	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }

	switch s.Type {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			fail("not an object")
			break
		}

		if path == ".metadata" {
			break
		}

		for _, r := range s.Required {
			if _, ok := m[r]; !ok {
				fail("%s is required", r)
			}
		}

		for k, e := range m {
			switch {
			case s.Properties[k] != nil:
				errs = append(errs, schemaErrors(s.Properties[k], path+"."+k, e)...)
			case s.AdditionalProperties != nil:
				errs = append(errs, schemaErrors(s.AdditionalProperties, path+"."+k, e)...)
			default:
				errs = append(errs, path+"."+k+": unknown field")
			}
		}
	case "array":
		l, ok := v.([]any)
		if !ok {
			fail("not an array")
			break
		}

		if s.MinItems != nil && len(l) < *s.MinItems {
			fail("fewer than %d items", *s.MinItems)
		}

		for i, e := range l {
			errs = append(errs, schemaErrors(s.Items, fmt.Sprintf("%s[%d]", path, i), e)...)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			fail("not a string")
			break
		}

		if s.MinLength != nil && len(str) < *s.MinLength {
			fail("shorter than %d", *s.MinLength)
		}

		if s.MaxLength != nil && len(str) > *s.MaxLength {
			fail("longer than %d", *s.MaxLength)
		}

		if s.Pattern != "" && !regexp.MustCompile(s.Pattern).MatchString(str) {
			fail("%q does not match %s", str, s.Pattern)
		}
	case "integer":
		var n float64

		switch x := v.(type) {
		case int:
			n = float64(x)
		case int64:
			n = float64(x)
		default:
			fail("not an integer")
			return errs
		}

		if s.Minimum != nil && n < *s.Minimum {
			fail("%v below %v", n, *s.Minimum)
		}

		if s.Maximum != nil && n > *s.Maximum {
			fail("%v above %v", n, *s.Maximum)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			fail("not a boolean")
		}
	}

	if len(s.Enum) > 0 && !slices.Contains(s.Enum, v) {
		fail("%v not in %v", v, s.Enum)
	}

	return errs
}
