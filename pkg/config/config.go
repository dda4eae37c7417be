// Package config owns the talos-lb agent's configuration file: its
// versioned YAML format, the defaults, and validation.
//
// Parsing is strict on purpose: the agent runs unattended on nodes that are
// hard to debug, so a typo must fail loudly at load time, with the line and
// field path, rather than be silently ignored and surface later as a missing
// VIP or a flapping health check.
//
// The package only turns bytes into a checked Config. It must not touch the
// system: no listening, no dialling, no checking that certificate files
// exist. The only exceptions are reading the file in Load and asking for the
// hostname to default node.name.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The header every config file must carry. A new format gets a new
// APIVersion rather than a reinterpretation of this one.
const (
	APIVersion = "talos-lb.dev/v1alpha1"
	Kind       = "AgentConfig"
)

// Config is the agent configuration, format v1alpha1.
//
// To add a section: add a struct with yaml tags, give it validate (and,
// if it has defaults, defaults) methods, and call them from Config's.
// Optional sections can be pointers; nil then means "absent".
type Config struct {
	APIVersion   string        `yaml:"apiVersion"`
	Kind         string        `yaml:"kind"`
	Node         Node          `yaml:"node"`
	API          API           `yaml:"api"`
	Metrics      Metrics       `yaml:"metrics"`
	StateDir     string        `yaml:"stateDir"`
	HealthChecks []HealthCheck `yaml:"healthChecks"`
	Proxies      []Proxy       `yaml:"proxies"`
	VIP          *VIP          `yaml:"vip"`
	BGP          *BGP          `yaml:"bgp"`
	Members      *Members      `yaml:"members"`
}

// Duration is a time.Duration written as a Go duration string ("1s",
// "250ms") in the file, because bare integers would leave the unit to guess.
type Duration struct {
	time.Duration
}

// MarshalText writes the form UnmarshalText reads, so configs round-trip.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// UnmarshalText accepts what time.ParseDuration accepts. Its error is shown
// to users as is, so it avoids time's "time: " prefix.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q", text)
	}
	d.Duration = v
	return nil
}

// hostname is a variable so tests do not depend on the machine they run on.
var hostname = os.Hostname

// Load reads and parses the config file at path. It also returns the raw
// bytes because callers fingerprint the file as written, not as parsed.
func Load(path string) (*Config, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, data, nil
}

// Parse decodes a config strictly, applies defaults and validates it.
// All problems found in a stage are reported together (errors.Join), each
// as "line N: path: message", so one edit-reload cycle fixes them all.
func Parse(data []byte) (*Config, error) {
	return ParseAs(data, "")
}

// ParseAs parses data as the agent on the node named nodeName would: when the
// file leaves node.name out, it is nodeName rather than this machine's
// hostname ("" means this machine). Tools that check a config shared by
// several nodes (lbctl validate) parse it as each of them.
func ParseAs(data []byte, nodeName string) (*Config, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	if err := checkHeader(root); err != nil {
		return nil, err
	}

	cfg := &Config{}
	d := decoder{src: newSource()}
	d.decode(root, reflect.ValueOf(cfg).Elem(), "")
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}

	s := scope{src: d.src, errs: new([]error)}
	cfg.defaults(s)
	if nodeName != "" && !s.at("node").has("name") {
		cfg.Node.Name = nodeName
	}
	cfg.validate(s)
	if len(*s.errs) > 0 {
		// File order is how people fix them; the walk follows struct order.
		slices.SortStableFunc(*s.errs, func(a, b error) int {
			return a.(*fieldError).line - b.(*fieldError).line
		})
		return nil, errors.Join(*s.errs...)
	}
	return cfg, nil
}

// Validate checks a Config that was built in code rather than parsed.
// Defaults are not applied, and errors carry no line numbers.
func (c *Config) Validate() error {
	s := scope{errs: new([]error)}
	c.validate(s)
	return errors.Join(*s.errs...)
}

func (c *Config) defaults(s scope) {
	c.Node.defaults(s.at("node"))
	c.API.defaults(s.at("api"))
	c.Metrics.defaults(s.at("metrics"))
	if !s.has("stateDir") {
		c.StateDir = "/var/lib/talos-lb"
	}
	for i := range c.HealthChecks {
		c.HealthChecks[i].defaults(s.at("healthChecks").index(i))
	}
	defaultProxies(s.at("proxies"), c.Proxies)
	if c.VIP != nil {
		c.VIP.defaults(s.at("vip"))
	}
	if c.BGP != nil {
		c.BGP.defaults(s.at("bgp"))
	}
	if c.Members != nil {
		c.Members.defaults(s.at("members"))
	}
}

func (c *Config) validate(s scope) {
	if c.APIVersion != APIVersion {
		s.fail("apiVersion", "got %q, expected %q", c.APIVersion, APIVersion)
	}
	if c.Kind != Kind {
		s.fail("kind", "got %q, expected %q", c.Kind, Kind)
	}
	c.Node.validate(s.at("node"))
	c.API.validate(s.at("api"))
	c.Metrics.validate(s.at("metrics"))
	checkAbsPath(s, "stateDir", c.StateDir)

	first := map[string]int{}
	for i := range c.HealthChecks {
		hs := s.at("healthChecks").index(i)
		hc := &c.HealthChecks[i]
		hc.validate(hs)
		if hc.Name == "" {
			continue
		}
		if _, dup := first[hc.Name]; dup {
			hs.fail("name", "duplicate name %q", hc.Name)
			continue
		}
		first[hc.Name] = i
	}
	validateProxies(s.at("proxies"), c.Proxies)
	if c.VIP != nil {
		c.VIP.validate(s.at("vip"), c)
	}
	if c.BGP != nil {
		c.BGP.validate(s.at("bgp"))
	}
	if c.Members != nil {
		c.Members.validate(s.at("members"))
	}
}

// parseDocument returns the top-level mapping of a single-document file.
// yaml.v3 would happily take the first of several documents and ignore
// the rest; an agent config split by a stray "---" is a mistake.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty document: expected a mapping starting with apiVersion and kind")
		}
		return nil, yamlError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, fmt.Errorf("line %d: multiple YAML documents; the config must be a single document", next.Line)
	case !errors.Is(err, io.EOF):
		return nil, yamlError(err)
	}

	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, errors.New("empty document: expected a mapping starting with apiVersion and kind")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: top level must be a mapping, got %s", root.Line, describe(root))
	}
	return root, nil
}

// yamlError drops the library's "yaml: " prefix so syntax errors read like
// ours ("line N: ...").
func yamlError(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

// checkHeader runs before decoding: a file for another version follows a
// different schema, and listing its "unknown fields" would bury the one
// error that matters.
func checkHeader(root *yaml.Node) error {
	var errs []error
	for _, h := range []struct{ key, want string }{{"apiVersion", APIVersion}, {"kind", Kind}} {
		k, v := lookup(root, h.key)
		switch {
		case k == nil:
			errs = append(errs, &fieldError{path: h.key, msg: fmt.Sprintf("missing, expected %q", h.want)})
		case v.Kind != yaml.ScalarNode || v.Value != h.want:
			errs = append(errs, &fieldError{line: k.Line, path: h.key, msg: fmt.Sprintf("got %s, expected %q", describe(v), h.want)})
		}
	}
	return errors.Join(errs...)
}

//go:embed example.yaml
var example []byte

// Example returns a commented, valid config showing every field with its
// default. It is a copy, so callers may modify it.
func Example() []byte {
	return bytes.Clone(example)
}
