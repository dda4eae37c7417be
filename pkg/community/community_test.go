package community_test

import (
	"testing"

	"github.com/talos-lb/talos-lb/pkg/community"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]uint32{"65000:100": 65000<<16 | 100, "no-export": 0xFFFFFF01, "0:0": 0} {
		got, err := community.Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}

	for _, bad := range []string{"65536:1", "1", "a:b", ""} {
		if _, err := community.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}

	if got, err := community.ParseLarge("4200000000:1:2"); err != nil || got != [3]uint32{4200000000, 1, 2} {
		t.Errorf("ParseLarge = %v, %v", got, err)
	}

	if _, err := community.ParseLarge("1:2"); err == nil {
		t.Error("ParseLarge accepted two parts")
	}
}
