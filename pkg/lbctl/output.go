package lbctl

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// printer writes resources in one output format; mark is "" outside --watch.
type printer interface {
	print(node string, rd *meta.ResourceDefinitionSpec, mark string, r resource.Resource) error
	flush() error
}

func newPrinter(format string, w io.Writer, watch bool) (printer, error) {
	switch format {
	case "table":
		return &tablePrinter{w: tabwriter.NewWriter(w, 0, 0, 3, ' ', 0), watch: watch}, nil
	case "yaml":
		return &docPrinter{w: w, yaml: true}, nil
	case "json":
		return &docPrinter{w: w}, nil
	default:
		return nil, fmt.Errorf("unknown output format %q (table, yaml or json)", format)
	}
}

// specData turns a spec into plain maps: protobuf specs via protojson (the
// names print columns use), others (COSI's own meta resources) via YAML.
func specData(r resource.Resource) (any, error) {
	var (
		raw []byte
		err error
		out any
	)

	if pb, ok := r.Spec().(interface{ GetValue() proto.Message }); ok {
		// Unpopulated fields too: a "false" or "0" that is missing reads as unknown.
		raw, err = protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(pb.GetValue())
		if err == nil {
			err = json.Unmarshal(raw, &out)
		}
	} else {
		raw, err = yaml.Marshal(r.Spec())
		if err == nil {
			err = yaml.Unmarshal(raw, &out)
		}
	}

	if err != nil {
		return nil, fmt.Errorf("decoding spec of %s %s: %w", r.Metadata().Type(), r.Metadata().ID(), err)
	}

	if out == nil {
		out = map[string]any{}
	}

	return out, nil
}

type tablePrinter struct {
	w         *tabwriter.Writer
	watch     bool
	headerFor string
}

func (p *tablePrinter) print(node string, rd *meta.ResourceDefinitionSpec, mark string, r resource.Resource) error {
	if p.headerFor != rd.Type {
		p.headerFor = rd.Type

		cols := []string{"NODE", "NAMESPACE", "TYPE", "ID", "VERSION"}
		if p.watch {
			cols = append([]string{"*"}, cols...)
		}

		for _, c := range rd.PrintColumns {
			cols = append(cols, strings.ToUpper(c.Name))
		}

		fmt.Fprintln(p.w, strings.Join(cols, "\t"))
	}

	data, err := specData(r)
	if err != nil {
		return err
	}

	md := r.Metadata()
	row := []string{node, md.Namespace(), rd.DisplayType, md.ID(), md.Version().String()}

	if p.watch {
		row = append([]string{mark}, row...)
	}

	for _, c := range rd.PrintColumns {
		v, err := evalPath(c.JSONPath, data)
		if err != nil {
			return fmt.Errorf("column %s: %w", c.Name, err)
		}

		row = append(row, v)
	}

	_, err = fmt.Fprintln(p.w, strings.Join(row, "\t"))

	return err
}

func (p *tablePrinter) flush() error {
	return p.w.Flush()
}

type docPrinter struct {
	w    io.Writer
	yaml bool
}

func (p *docPrinter) print(node string, _ *meta.ResourceDefinitionSpec, mark string, r resource.Resource) error {
	data, err := specData(r)
	if err != nil {
		return err
	}

	md := r.Metadata()
	doc := map[string]any{
		"node": node,
		"metadata": map[string]any{
			"namespace": md.Namespace(),
			"type":      md.Type(),
			"id":        md.ID(),
			"version":   md.Version().String(),
			"owner":     md.Owner(),
			"phase":     md.Phase().String(),
			"created":   md.Created(),
			"updated":   md.Updated(),
		},
		"spec": data,
	}

	if mark != "" {
		doc["event"] = map[string]string{"+": "created", "*": "updated", "-": "destroyed"}[mark]
	}

	if p.yaml {
		if _, err := fmt.Fprintln(p.w, "---"); err != nil {
			return err
		}

		enc := yaml.NewEncoder(p.w)
		enc.SetIndent(2)

		if err := enc.Encode(doc); err != nil {
			return err
		}

		return enc.Close()
	}

	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")

	return enc.Encode(doc)
}

func (p *docPrinter) flush() error {
	return nil
}

// evalPath evaluates the subset of JSONPath that print columns use:
// "{.a.b}", "{.list[*].field}", "{.list[*]}" (also "[:]"); lists are joined with ",".
func evalPath(path string, data any) (string, error) {
	expr, ok := strings.CutPrefix(path, "{.")
	if !ok || !strings.HasSuffix(expr, "}") {
		return "", fmt.Errorf("unsupported path %q", path)
	}

	values := []any{data}

	for _, seg := range strings.Split(strings.TrimSuffix(expr, "}"), ".") {
		name, spread := strings.CutSuffix(seg, "[*]")
		if !spread {
			name, spread = strings.CutSuffix(seg, "[:]")
		}

		var next []any

		for _, v := range values {
			m, ok := v.(map[string]any)
			if !ok {
				continue
			}

			field, ok := m[name]
			if !ok {
				continue
			}

			if list, isList := field.([]any); isList && spread {
				next = append(next, list...)
			} else {
				next = append(next, field)
			}
		}

		values = next
	}

	parts := make([]string, 0, len(values))
	for _, v := range values {
		parts = append(parts, scalar(v))
	}

	return strings.Join(parts, ","), nil
}

func scalar(v any) string {
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10)
		}

		return strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		return x
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}
