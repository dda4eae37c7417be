package stats_test

import (
	"testing"
	"time"

	"github.com/talos-lb/talos-lb/hack/bench/stats"
)

func TestPct(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 10; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}

	for p, want := range map[float64]float64{50: 5, 90: 9, 99: 10, 100: 10, 1: 1} {
		if got := stats.Pct(d, p); got != want {
			t.Errorf("Pct(%v) = %v, want %v", p, got, want)
		}
	}

	if stats.Pct(nil, 50) != 0 {
		t.Error("Pct of no samples must be 0")
	}
}
