package lab

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Unavailable says why a lab cannot be built here, or "" if it can.
func Unavailable() string {
	if os.Geteuid() != 0 {
		return "network namespace lab needs root (run the tests as root)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "network namespace lab needs iproute2's ip: " + err.Error()
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		return "network namespace lab needs `ip netns`: " + err.Error() + ": " + strings.TrimSpace(string(out))
	}
	return ""
}

// NewForTest builds a lab for t, skips t when labs cannot run here (see Unavailable) and
// tears the lab down in t's cleanup. If t failed, the cleanup first logs every process's
// output.
func NewForTest(t testing.TB, opts Options) *Lab {
	t.Helper()
	if reason := Unavailable(); reason != "" {
		t.Skip("lab: " + reason)
	}
	l, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			procs := l.procs
			l.mu.Unlock()
			for _, p := range procs {
				t.Logf("lab %s: %s/%s (pid %d, %s) log:\n%s", l.Prefix, p.Host.Name, p.Name, p.pid, p.LogPath(), p.Log())
			}
		}
		if err := l.Teardown(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return l
}
