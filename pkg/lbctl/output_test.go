package lbctl

import (
	"encoding/json"
	"testing"
)

func TestEvalPath(t *testing.T) {
	var data any
	if err := json.Unmarshal([]byte(`{"role":"controlplane","generation":"3","latencyUs":1500,"addresses":["10.0.0.2/24","fd00::2/64"],
		"healthChecks":[{"name":"apiserver"},{"name":"etcd"}],"nested":{"deep":true}}`), &data); err != nil {
		t.Fatal(err)
	}

	for path, want := range map[string]string{
		"{.role}":                 "controlplane",
		"{.generation}":           "3",
		"{.latencyUs}":            "1500",
		"{.addresses[*]}":         "10.0.0.2/24,fd00::2/64",
		"{.healthChecks[*].name}": "apiserver,etcd",
		"{.nested.deep}":          "true",
		"{.missing}":              "",
	} {
		got, err := evalPath(path, data)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}

		if got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}

	if _, err := evalPath(".role", data); err == nil {
		t.Error("a path without braces must be refused")
	}
}
