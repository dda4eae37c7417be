package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/talos-lb/talos-lb/controller/push/pushtest"
	"github.com/talos-lb/talos-lb/pkg/pki"
)

// With -ackers-process the ackers run in a child process (this program again,
// told so by the environment), so that rss_mb is the controller's alone.
const (
	envAckers = "BENCH_CONTROLLER_ACKERS" // how many
	envCACert = "BENCH_CONTROLLER_CA_CERT"
	envCAKey  = "BENCH_CONTROLLER_CA_KEY"
)

// ackerChild is the child's main: it starts the ackers, prints their
// addresses and "ready", and when its stdin closes prints "hwm N" (its peak
// RSS in MiB) and exits.
func ackerChild() {
	t := &tb{}
	defer t.close()

	n, err := strconv.Atoi(os.Getenv(envAckers))
	if err != nil {
		t.Fatalf("%s: %v", envAckers, err)
	}

	certPEM, err := os.ReadFile(os.Getenv(envCACert))
	if err != nil {
		t.Fatal(err)
	}

	keyPEM, err := os.ReadFile(os.Getenv(envCAKey))
	if err != nil {
		t.Fatal(err)
	}

	ca, err := pki.ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}

	out := bufio.NewWriter(os.Stdout)
	for _, a := range pushtest.StartAckers(t, n, ca) {
		fmt.Fprintln(out, a.Address)
	}

	fmt.Fprintln(out, "ready")
	out.Flush() //nolint:errcheck // the parent sees a short list

	io.Copy(io.Discard, os.Stdin) //nolint:errcheck // EOF or error: the parent is done

	hwm, err := peakRSS()
	if err != nil {
		t.Fatal(err)
	}

	fmt.Printf("hwm %d\n", hwm)
}

// startAckerProcess starts n ackers in a child process. The agents it returns
// have no Acker (their counters live in the child); stop ends the child and
// returns its peak RSS in MiB.
func startAckerProcess(t *tb, n int, ca *pki.KeyPair) (agents []pushtest.Agent, stop func() (int, error), err error) {
	dir, err := os.MkdirTemp("", "bench-controller-")
	if err != nil {
		return nil, nil, err
	}

	t.Cleanup(func() { os.RemoveAll(dir) }) //nolint:errcheck // a temporary directory

	cert, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := errors.Join(os.WriteFile(cert, ca.CertPEM, 0o600), os.WriteFile(key, ca.KeyPEM, 0o600)); err != nil {
		return nil, nil, err
	}

	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}

	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), envAckers+"="+strconv.Itoa(n), envCACert+"="+cert, envCAKey+"="+key)
	cmd.Stderr = os.Stderr

	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}

	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}

	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}

	sc := bufio.NewScanner(stdout)
	for i := 0; sc.Scan() && sc.Text() != "ready"; i++ {
		agents = append(agents, pushtest.Agent{Node: pushtest.NodeName(i), Address: sc.Text()})
	}

	stopped := false
	stop = func() (int, error) {
		if stopped {
			return 0, nil
		}

		stopped = true
		stdin.Close() //nolint:errcheck // closing is the signal

		hwm := 0

		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "hwm "); ok {
				hwm, _ = strconv.Atoi(v) //nolint:errcheck // 0 shows it was unreadable
			}
		}

		return hwm, cmd.Wait()
	}

	t.Cleanup(func() { stop() }) //nolint:errcheck // at exit, after an error

	if len(agents) != n {
		_, werr := stop()

		return nil, nil, fmt.Errorf("the ackers' process started %d of %d ackers: %w", len(agents), n, errors.Join(sc.Err(), werr))
	}

	return agents, stop, nil
}
