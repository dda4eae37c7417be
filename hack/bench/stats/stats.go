// Package stats holds what every benchmark under hack/bench shares: the trial
// count from $TRIALS and nearest-rank percentiles in milliseconds.
package stats

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/talos-lb/talos-lb/integration/lab"
)

// Trials reads $TRIALS, or returns def.
func Trials(def int) (int, error) {
	s := os.Getenv("TRIALS")
	if s == "" {
		return def, nil
	}

	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("TRIALS=%q: want a positive number", s)
	}

	return n, nil
}

// Ms is a duration in (fractional) milliseconds.
func Ms(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// Pct is the nearest-rank percentile p (0-100) of d, in milliseconds.
func Pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}

	s := slices.Clone(d)
	slices.Sort(s)

	return Ms(s[max(int(math.Ceil(p/100*float64(len(s))))-1, 0)])
}

// Row is one line of a results table.
type Row struct {
	Name    string
	Samples []time.Duration
}

// Table prints rows as a Markdown table of p50, p99 and max.
func Table(rows ...Row) {
	fmt.Printf("\n| measure | p50 ms | p99 ms | max ms |\n|---|---|---|---|\n")

	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %.0f | %.0f |\n", r.Name, Pct(r.Samples, 50), Pct(r.Samples, 99), Pct(r.Samples, 100))
	}
}

// Main runs a lab benchmark: it reads $TRIALS (default def), checks the lab
// can run, cancels on Ctrl-C, and exits 1 with the error prefixed by name.
func Main(name string, def int, run func(ctx context.Context, trials int) error) {
	err := func() error {
		trials, err := Trials(def)
		if err != nil {
			return err
		}

		if reason := lab.Unavailable(); reason != "" {
			return fmt.Errorf("the lab cannot run here: %s", reason)
		}

		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()

		return run(ctx, trials)
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
