package crd

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// topLevel are the keys an object may have besides nothing else.
var topLevel = []string{"apiVersion", "kind", "metadata", "spec", "status"}

// hints explain unknown fields that MetalLB has and we spell differently;
// keyed by kind and the field path without list indexes.
var hints = map[string]string{
	KindBGPPeer + " spec.ebgpMultiHop":             "set spec.ebgpMultiHopTTL instead (MetalLB's ebgpMultiHop: true is ebgpMultiHopTTL: 255)",
	KindBGPPeer + " spec.bfdProfile":               "BFD is configured inline: spec.bfd with minTx, minRx and multiplier",
	KindBGPPeer + " spec.enableGracefulRestart":    "set spec.gracefulRestart.enabled instead",
	KindBGPPeer + " spec.passwordSecret.namespace": "the Secret must be in the BGPPeer's own namespace",
	KindBGPPeer + " spec.holdtime":                 "the field is spelt holdTime",
	KindBGPPeer + " spec.keepalive":                "the field is spelt keepaliveTime",
}

// decodeObject checks u's envelope (apiVersion, kind, top-level keys), fills
// obj's metadata and status leniently (the API server owns those) and
// decodes spec strictly into spec. obj must be a pointer to one of the kinds.
func decodeObject(u *unstructured.Unstructured, kind string, obj any, spec any, specRequired bool) *fieldErrors {
	fe := &fieldErrors{}

	if u == nil || u.Object == nil {
		fe.add("object", "empty")
		return fe
	}

	for _, k := range sortedKeys(u.Object) {
		if !slices.Contains(topLevel, k) {
			fe.add(k, "unknown field")
		}
	}

	if av := u.GetAPIVersion(); av != APIVersion {
		msg := fmt.Sprintf("want %s, got %q", APIVersion, av)
		if strings.HasPrefix(av, "metallb.io/") {
			msg += " (a MetalLB object: docs/controller-crds.md shows how it maps to ours)"
		}

		fe.add("apiVersion", "%s", msg)
	}

	if k := u.GetKind(); k != kind {
		fe.add("kind", "want %s, got %q", kind, k)
	}

	// metadata and status: lenient. The API server validated metadata, and
	// the controller wrote status; neither is the user's config.
	envelope := map[string]any{}
	for _, k := range []string{"apiVersion", "kind", "metadata"} {
		if v, ok := u.Object[k]; ok {
			envelope[k] = v
		}
	}

	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(envelope, obj); err != nil {
		fe.add("metadata", "%v", err)
	}

	if st, ok := u.Object["status"].(map[string]any); ok {
		status := reflect.ValueOf(obj).Elem().FieldByName("Status").Addr().Interface()
		// A status we cannot read is one the controller will overwrite.
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(st, status)
	}

	if u.GetName() == "" {
		fe.add("metadata.name", "required")
	}

	raw, ok := u.Object["spec"]
	if !ok || raw == nil {
		if specRequired {
			fe.decodeError("spec", "required")
		}

		return fe
	}

	d := decoder{kind: kind, errs: fe}
	d.value("spec", raw, reflect.ValueOf(spec).Elem())

	return fe
}

// decoder walks unstructured data (maps, lists, strings, bools, int64 and
// float64 as the JSON and YAML decoders produce them) into Go values by their
// JSON field names, reporting each unknown field and wrong type at its path.
type decoder struct {
	kind string
	errs *fieldErrors
}

var durationType = reflect.TypeFor[metav1.Duration]()

func (d decoder) value(path string, in any, out reflect.Value) {
	if in == nil {
		// null is the same as absent.
		return
	}

	t := out.Type()

	if t == durationType {
		s, ok := in.(string)
		if !ok {
			d.errs.decodeError(path, "want a duration such as \"90s\" or \"1m30s\", got %s", describe(in))
			return
		}

		v, err := time.ParseDuration(s)
		if err != nil {
			d.errs.decodeError(path, "%q is not a duration (write it like \"90s\", \"1m30s\" or \"300ms\")", s)
			return
		}

		out.Set(reflect.ValueOf(metav1.Duration{Duration: v}))

		return
	}

	switch t.Kind() {
	case reflect.Pointer:
		v := reflect.New(t.Elem())
		d.value(path, in, v.Elem())
		out.Set(v)

	case reflect.Struct:
		m, ok := in.(map[string]any)
		if !ok {
			d.errs.decodeError(path, "want an object, got %s", describe(in))
			return
		}

		fields := jsonFields(t)
		for _, k := range sortedKeys(m) {
			i, ok := fields[k]
			if !ok {
				msg := "unknown field"
				if h := hints[d.kind+" "+stripIndexes(path+"."+k)]; h != "" {
					msg += ": " + h
				}

				d.errs.decodeError(path+"."+k, "%s", msg)

				continue
			}

			d.value(path+"."+k, m[k], out.Field(i))
		}

	case reflect.Slice:
		l, ok := in.([]any)
		if !ok {
			d.errs.decodeError(path, "want a list, got %s", describe(in))
			return
		}

		s := reflect.MakeSlice(t, len(l), len(l))
		for i, e := range l {
			d.value(index(path, i), e, s.Index(i))
		}

		out.Set(s)

	case reflect.Map:
		m, ok := in.(map[string]any)
		if !ok {
			d.errs.decodeError(path, "want an object, got %s", describe(in))
			return
		}

		mv := reflect.MakeMapWithSize(t, len(m))
		for _, k := range sortedKeys(m) {
			v := reflect.New(t.Elem()).Elem()
			d.value(path+"."+k, m[k], v)
			mv.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), v)
		}

		out.Set(mv)

	case reflect.String:
		s, ok := in.(string)
		if !ok {
			d.errs.decodeError(path, "want a string, got %s", describe(in))
			return
		}

		out.SetString(s)

	case reflect.Bool:
		b, ok := in.(bool)
		if !ok {
			d.errs.decodeError(path, "want true or false, got %s", describe(in))
			return
		}

		out.SetBool(b)

	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := integer(in)
		if !ok {
			d.errs.decodeError(path, "want an integer, got %s", describe(in))
			return
		}

		lo, hi := int64(-1)<<(t.Bits()-1), int64(1)<<(t.Bits()-1)-1
		if n < float64(lo) || n > float64(hi) {
			d.errs.decodeError(path, "%v is out of range (%d to %d)", n, lo, hi)
			return
		}

		out.SetInt(int64(n))

	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := integer(in)
		if !ok {
			d.errs.decodeError(path, "want an integer, got %s", describe(in))
			return
		}

		hi := uint64(math.MaxUint64) >> (64 - t.Bits())
		if n < 0 || n > float64(hi) {
			d.errs.decodeError(path, "%v is out of range (0 to %d)", n, hi)
			return
		}

		out.SetUint(uint64(n))

	default:
		// Only reached if a type gains a field kind this decoder lacks; the
		// schema test would fail first.
		d.errs.decodeError(path, "cannot decode into %s", t)
	}
}

// integer reads the number types unstructured data holds. float64 is exact
// for every integer up to 2^53, far beyond any field here.
func integer(in any) (float64, bool) {
	switch n := in.(type) {
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, n == math.Trunc(n) && !math.IsInf(n, 0)
	case json.Number:
		f, err := n.Float64()
		return f, err == nil && f == math.Trunc(f)
	}

	return 0, false
}

func describe(in any) string {
	switch v := in.(type) {
	case string:
		return fmt.Sprintf("a string (%q)", v)
	case bool:
		return fmt.Sprintf("a boolean (%v)", v)
	case int64, int, int32, uint64, float64, json.Number:
		return fmt.Sprintf("a number (%v)", v)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}

	return fmt.Sprintf("a %T", in)
}

var fieldCache sync.Map // reflect.Type → map[string]int

// jsonFields maps a struct's JSON field names to field indexes.
func jsonFields(t reflect.Type) map[string]int {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]int)
	}

	m := map[string]int{}

	for i := range t.NumField() {
		f := t.Field(i)
		if name := jsonName(f); name != "" {
			m[name] = i
		}
	}

	fieldCache.Store(t, m)

	return m
}

// jsonName is the field's JSON name; "" for unexported, skipped and inline
// fields.
func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}

	tag := f.Tag.Get("json")
	name, _, _ := strings.Cut(tag, ",")

	switch {
	case name == "-":
		return ""
	case name == "" && f.Anonymous:
		return ""
	case name == "":
		return f.Name
	}

	return name
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}

	slices.Sort(keys)

	return keys
}

// stripIndexes turns "spec.a[3].b" into "spec.a.b".
func stripIndexes(path string) string {
	var b strings.Builder

	skip := false

	for _, r := range path {
		switch {
		case r == '[':
			skip = true
		case r == ']':
			skip = false
		case !skip:
			b.WriteRune(r)
		}
	}

	return b.String()
}
