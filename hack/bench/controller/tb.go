package main

import (
	"fmt"
	"os"
	"slices"
	"testing"
)

// tb lets this program use pushtest's helpers, written for tests: Fatal ends
// the program, Cleanup runs at close.
type tb struct {
	testing.TB // nil: a method not defined here panics

	cleanups []func()
}

func (*tb) Helper()            {}
func (*tb) Name() string       { return "bench-controller" }
func (*tb) Failed() bool       { return false }
func (t *tb) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }
func (*tb) Log(args ...any)    { fmt.Fprintln(os.Stderr, args...) }

func (*tb) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func (t *tb) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"bench-controller:"}, args...)...)
	t.close()
	os.Exit(1)
}

func (t *tb) Fatalf(format string, args ...any) { t.Fatal(fmt.Sprintf(format, args...)) }

// close runs the cleanups, last registered first.
func (t *tb) close() {
	for _, f := range slices.Backward(t.cleanups) {
		f()
	}

	t.cleanups = nil
}
