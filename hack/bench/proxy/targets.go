package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// target is one way to reach the upstreams: directly or through a proxy process.
type target struct {
	name string
	addr string
	cmd  *exec.Cmd // nil for direct
	prof *profiler // set when -profile runs talos-lb in this program
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}

	defer ln.Close() //nolint:errcheck

	return ln.Addr().String(), nil
}

// start runs argv with its output in dir/<name>.log and waits until addr accepts.
func start(ctx context.Context, dir, name, addr string, env []string, argv ...string) (*target, error) {
	logFile, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}

	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)

	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}

	t := &target{name: name, addr: addr, cmd: cmd}

	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close() //nolint:errcheck

			// Let health checks reach a verdict before the first load.
			time.Sleep(2500 * time.Millisecond)

			return t, nil
		}
	}

	t.stop()

	log, _ := os.ReadFile(logFile.Name()) //nolint:errcheck // only decorates the error

	return nil, fmt.Errorf("%s never listened on %s:\n%s", name, addr, log)
}

func (t *target) stop() {
	if t.cmd == nil || t.cmd.Process == nil {
		return
	}

	t.cmd.Process.Signal(os.Interrupt) //nolint:errcheck

	done := make(chan struct{})

	go func() {
		t.cmd.Wait() //nolint:errcheck
		close(done)
	}()

	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.cmd.Process.Kill() //nolint:errcheck
		<-done
	}
}

// startOurs runs talos-lb: the lb-agent binary agent with one proxy, or, with
// profileDir set, this program serving the same config through package lb
// with a CPU profile per load.
func startOurs(ctx context.Context, dir, name, bin, agent, profileDir string, env, upstreams []string) (*target, error) {
	secrets := filepath.Join(dir, "secrets")

	if _, err := os.Stat(secrets); err != nil {
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "lbctl"), "gen", "secrets", "-o", secrets).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("lbctl gen secrets: %w\n%s", err, out)
		}
	}

	api, err := freeAddr()
	if err != nil {
		return nil, err
	}

	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}

	cfg := fmt.Sprintf(`apiVersion: talos-lb.dev/v1alpha1
kind: AgentConfig
node: {name: bench, role: worker}
api:
  listen: %s
  tls: {ca: %[2]s/ca.crt, cert: %[2]s/agent.crt, key: %[2]s/agent.key}
metrics: {enabled: false}
stateDir: %s/state-%s
proxies:
  - name: bench
    listen: [%s]
    upstreams: [%s]
    healthCheck: {kind: tcp}
`, api, secrets, dir, name, addr, strings.Join(upstreams, ", "))

	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}

	if profileDir == "" {
		return start(ctx, dir, name, addr, env, agent, "--config", path)
	}

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}

	control, err := freeAddr()
	if err != nil {
		return nil, err
	}

	t, err := start(ctx, dir, name, addr, append(env, serveEnv+"="+path+","+control), self)
	if err != nil {
		return nil, err
	}

	t.prof = &profiler{dir: profileDir, control: control}

	return t, nil
}

func startHAProxy(ctx context.Context, dir string, upstreams []string) (*target, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}

	var servers strings.Builder
	for i, u := range upstreams {
		fmt.Fprintf(&servers, "  server s%d %s check inter 1s\n", i, u)
	}

	cfg := fmt.Sprintf(`global
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend bench
  bind %s
  default_backend upstreams
backend upstreams
  balance roundrobin
%s`, addr, servers.String())

	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}

	return start(ctx, dir, "haproxy", addr, nil, "haproxy", "-db", "-f", path)
}

func startGoLB(ctx context.Context, dir, bin string, upstreams []string) (*target, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}

	return start(ctx, dir, "go-loadbalancer", addr, nil, filepath.Join(bin, "golb"), "-listen", addr, "-upstreams", strings.Join(upstreams, ","))
}

// cpuTime is the proxy process's user+system time so far; zero for direct.
func (t *target) cpuTime() (time.Duration, error) {
	if t.cmd == nil {
		return 0, nil
	}

	return cpuTime(t.cmd.Process.Pid)
}

// cpuTime is a process's user+system time so far, from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}

	// Fields after the ")" that closes the command name: state is field 3,
	// utime 14 and stime 15, in clock ticks of 1/100 s on Linux.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))

	var utime, stime int64

	if _, err := fmt.Sscan(fields[11], &utime); err != nil {
		return 0, err
	}

	if _, err := fmt.Sscan(fields[12], &stime); err != nil {
		return 0, err
	}

	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
