package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FRR is FRRouting (zebra + bgpd + bfdd) running in the router namespace,
// the second router implementation the BGP tests check against.
type FRR struct {
	Dir   string
	procs []*Proc
}

const frrBin = "/usr/lib/frr"

// StartFRR runs zebra, bfdd and bgpd in the router namespace with conf as
// their shared configuration, on private sockets under Lab.Dir, and waits
// until vtysh answers.
func (l *Lab) StartFRR(ctx context.Context, conf string) (*FRR, error) {
	if l.Router == nil {
		return nil, fmt.Errorf("lab: StartFRR: lab has no router")
	}

	f := &FRR{Dir: filepath.Join(l.Dir, "frr")}

	// The daemons drop to the frr user: their directory must be theirs, and
	// the lab directory (0700 from MkdirTemp) passable.
	if err := os.Chmod(l.Dir, 0o711); err != nil {
		return nil, fmt.Errorf("lab: FRR directory: %w", err)
	}

	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: FRR directory: %w", err)
	}

	u, err := user.Lookup("frr")
	if err != nil {
		return nil, fmt.Errorf("lab: FRR user (is frr installed?): %w", err)
	}

	uid, _ := strconv.Atoi(u.Uid) //nolint:errcheck // numeric on Linux
	gid, _ := strconv.Atoi(u.Gid) //nolint:errcheck // numeric on Linux

	if err := os.Chown(f.Dir, uid, gid); err != nil {
		return nil, fmt.Errorf("lab: FRR directory: %w", err)
	}

	confPath := filepath.Join(f.Dir, "frr.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil { //nolint:gosec // read by the frr user
		return nil, fmt.Errorf("lab: FRR config: %w", err)
	}

	zserv := filepath.Join(f.Dir, "zserv.api")

	for _, d := range []struct {
		name string
		args []string
	}{
		{"zebra", []string{"-z", zserv}},
		{"bfdd", []string{"-z", zserv, "--bfdctl", filepath.Join(f.Dir, "bfdd.sock")}},
		{"bgpd", []string{"-z", zserv}},
	} {
		argv := append([]string{filepath.Join(frrBin, d.name), "-f", confPath, "-i", filepath.Join(f.Dir, d.name+".pid"),
			"--vty_socket", f.Dir, "-P", "0", "-u", "frr", "-g", "frr"}, d.args...)

		p, err := l.Router.Start(ctx, "frr-"+d.name, argv, nil)
		if err != nil {
			return nil, err
		}

		f.procs = append(f.procs, p)

		// bgpd and bfdd connect to zebra's socket at start.
		if err := waitFile(ctx, zserv, 5*time.Second); err != nil {
			return nil, fmt.Errorf("lab: zebra: %w\n%s", err, p.Log())
		}
	}

	deadline := time.Now().Add(10 * time.Second)

	for {
		out, err := f.Vtysh(ctx, "show bgp summary")
		if err == nil && !strings.Contains(out, "is not running") {
			return f, nil
		}

		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lab: FRR not answering: %v\n%s", err, out)
		}

		time.Sleep(50 * time.Millisecond)
	}
}

func waitFile(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)

	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}

		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not appear within %s", path, timeout)
		}

		time.Sleep(20 * time.Millisecond)
	}
}

// Vtysh runs one vtysh command against this FRR.
func (f *FRR) Vtysh(ctx context.Context, command string) (string, error) {
	out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", f.Dir, "-c", command).CombinedOutput()

	return string(out), err
}
