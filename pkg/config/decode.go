package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// We walk yaml.Node ourselves instead of using yaml.Decoder.KnownFields:
// the library reports neither the field path nor, for later validation,
// where a field was written, and its messages name Go types.

// fieldError is the one error shape of this package, so that every message
// reads "line N: path: message" whichever stage produced it.
type fieldError struct {
	line int // 0 when the field is not in the file
	path string
	msg  string
}

func (e *fieldError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.line, e.path, e.msg)
	}
	return fmt.Sprintf("%s: %s", e.path, e.msg)
}

// source remembers what the file said, by field path ("api.tls.ca",
// "healthChecks[1].rise"), after decoding has flattened it into a struct.
type source struct {
	lines map[string]int  // where each field or list item was written
	set   map[string]bool // written with a non-null value
}

func newSource() *source {
	return &source{lines: map[string]int{}, set: map[string]bool{}}
}

// line falls back to the closest enclosing field, so an error about a
// missing field still points at the section that lacks it.
func (s *source) line(path string) int {
	if s == nil {
		return 0
	}
	for path != "" {
		if l, ok := s.lines[path]; ok {
			return l
		}
		path = path[:max(strings.LastIndexByte(path, '.'), strings.LastIndexByte(path, '['), 0)]
	}
	return 0
}

// scope is what defaults and validate methods get: their own path, so a
// section need not know where it sits in the file, and the shared source
// and error list.
type scope struct {
	path string
	src  *source // nil for configs built in code
	errs *[]error
}

func (s scope) at(field string) scope {
	s.path = joinPath(s.path, field)
	return s
}

func (s scope) index(i int) scope {
	s.path = fmt.Sprintf("%s[%d]", s.path, i)
	return s
}

// has reports whether the file set field; defaults use it so that an
// explicit zero ("rise: 0") is validated instead of silently replaced.
func (s scope) has(field string) bool {
	return s.src != nil && s.src.set[joinPath(s.path, field)]
}

func (s scope) fail(field, format string, args ...any) {
	p := joinPath(s.path, field)
	*s.errs = append(*s.errs, &fieldError{line: s.src.line(p), path: p, msg: fmt.Sprintf(format, args...)})
}

func joinPath(parent, field string) string {
	if parent == "" || field == "" {
		return parent + field
	}
	return parent + "." + field
}

type decoder struct {
	src  *source
	errs []error
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &fieldError{line: n.Line, path: path, msg: fmt.Sprintf(format, args...)})
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// decode stores n into v, which must be addressable. It keeps going after
// an error so that one run reports every problem in the file.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		// Expanding aliases would let a small file grow without bound
		// ("billion laughs"); a config has no real need for them.
		d.fail(n, path, "YAML aliases are not supported")
		return
	}
	if isNull(n) {
		return // leaves the zero value; defaults treat it as absent
	}
	if reflect.PointerTo(v.Type()).Implements(textUnmarshalerType) {
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "expected a string, got %s", describe(n))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.fail(n, path, "%s", err)
		}
		return
	}

	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "expected a list, got %s", describe(n))
			return
		}
		if len(n.Content) == 0 {
			return // keep nil, so that absent and [] compare equal
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.src.lines[p] = item.Line
			d.src.set[p] = !isNull(item)
			d.decode(item, s.Index(i), p)
		}
		v.Set(s)
	case reflect.String:
		// Numbers are accepted verbatim (a node may be named 1234), but
		// booleans and other tags are almost certainly a mistake.
		switch n.ShortTag() {
		case "!!str", "!!int", "!!float", "!!timestamp":
		default:
			d.fail(n, path, "expected a string, got %s", describe(n))
			return
		}
		// Every string in the format is a single-line token (name, path,
		// address); a line break is a quoting accident. Allowing them also
		// breaks round-tripping, as yaml.v3 cannot re-read some block
		// scalars it writes (e.g. "\n a").
		if strings.ContainsFunc(n.Value, unicode.IsControl) {
			d.fail(n, path, "must be a single line without control characters, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.ShortTag() != "!!bool" || err != nil {
			d.fail(n, path, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.fail(n, path, "expected an integer, got %s", describe(n))
			return
		}
		if v.OverflowInt(i) {
			bits := v.Type().Bits()
			d.fail(n, path, "%d is out of range [%d, %d]", i, int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var u uint64
		if n.ShortTag() != "!!int" || n.Decode(&u) != nil || v.OverflowUint(u) {
			d.fail(n, path, "expected an integer in [0, %d], got %s", uint64(1)<<v.Type().Bits()-1, describe(n))
			return
		}
		v.SetUint(u)
	default:
		// Only reachable by adding a field of a new kind to Config.
		panic(fmt.Sprintf("config: %s: unsupported field type %s", path, v.Type()))
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	fields, names := yamlFields(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "keys must be plain strings, got %s", describe(k))
			continue
		}
		name := k.Value
		if strings.ContainsFunc(name, unicode.IsControl) {
			name = strconv.Quote(name) // keep each error on one line
		}
		p := joinPath(path, name)
		if first, dup := seen[k.Value]; dup {
			d.fail(k, p, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		idx, ok := fields[k.Value]
		switch {
		case !ok && k.ShortTag() == "!!merge":
			d.fail(k, p, "YAML merge keys are not supported")
			continue
		case !ok:
			d.fail(k, p, "unknown field (known: %s)", strings.Join(names, ", "))
			continue
		}
		d.src.lines[p] = k.Line
		d.src.set[p] = !isNull(val)
		d.decode(val, v.Field(idx), p)
	}
}

// yamlFields maps yaml keys to field indexes; names keeps declaration
// order, which is also the order of the example, for error messages.
func yamlFields(t reflect.Type) (fields map[string]int, names []string) {
	fields = map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	return fields, names
}

// lookup finds a key in a mapping without decoding it.
func lookup(m *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what the user wrote in their terms, never Go's.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if isNull(n) {
		return "nothing"
	}
	s := n.Value
	if r := []rune(s); len(r) > 60 {
		s = string(r[:57]) + "..."
	}
	if n.ShortTag() == "!!str" {
		return strconv.Quote(s)
	}
	return s
}
