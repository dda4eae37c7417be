package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// StopTimeout is how long Stop and Close wait after SIGTERM before sending SIGKILL.
const StopTimeout = 3 * time.Second

// Proc is a process started in a lab namespace by Host.Start.
type Proc struct {
	Name string
	Host *Host
	Argv []string

	cmd     *exec.Cmd
	pid     int
	logPath string
	done    chan struct{}
	waitErr error
}

// Start runs argv inside h's namespace via `ip netns exec`, which execs argv in place, so
// PID() is the program's own PID; Start returns once that exec has happened. Output goes to a log file in Lab.Dir. env entries are
// added to this process's environment.
//
// ctx bounds the process's life like exec.CommandContext, but ends it gently: SIGTERM,
// then SIGKILL after StopTimeout. Close stops it in any case.
//
// The process gets SIGKILL if this process dies without running Close, so a crashed test
// leaves no daemons behind (namespace names may remain; they are unique per run).
func (h *Host) Start(ctx context.Context, name string, argv []string, env []string) (*Proc, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%s: start %q: empty argv", h.Name, name)
	}
	p, err := h.start(ctx, name, argv, env)
	if err != nil {
		return nil, err
	}
	if err := p.waitExec(p.cmd.Args); err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("%s: start %q (%s): %w", h.Name, name, strings.Join(argv, " "), err)
	}
	return p, nil
}

func (h *Host) start(ctx context.Context, name string, argv []string, env []string) (*Proc, error) {
	l := h.lab
	// Held across the fork so Close cannot miss a process that is being started.
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("%s: start %q: lab closed", h.Name, name)
	}

	base := h.Name + "." + sanitize(name)
	l.logSeq[base]++
	if n := l.logSeq[base]; n > 1 {
		base = fmt.Sprintf("%s.%d", base, n)
	}
	logPath := filepath.Join(l.Dir, base+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: start %q: open log: %w", h.Name, name, err)
	}
	defer logf.Close() // the child has its own descriptor

	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, argv...)...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a Ctrl-C in the demo's terminal reaches the demo, which then
		// stops processes in order, instead of reaching every daemon at once.
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = StopTimeout

	p := &Proc{Name: name, Host: h, Argv: argv, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the forking *thread* exits, and the Go runtime ends
		// threads whose locked goroutine exits. Holding this thread until the child is
		// reaped means only the death of this process triggers it (golang/go#27505).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("%s: start %q (%s): %w", h.Name, name, strings.Join(argv, " "), err)
	}
	p.pid = cmd.Process.Pid
	l.procs = append(l.procs, p)
	return p, nil
}

// execTimeout bounds the wait for `ip netns exec` to exec the program (~5-50 ms).
const execTimeout = 5 * time.Second

// waitExec waits until ip has exec'd the program, so that on return PID() names a process
// that runs the program inside the namespace. The sign is /proc/PID/cmdline no longer
// being ip's own command line: exec replaces it, even when the program is ip itself.
func (p *Proc) waitExec(ipArgv []string) error {
	ipCmdline := strings.Join(ipArgv, "\x00") + "\x00"
	path := fmt.Sprintf("/proc/%d/cmdline", p.pid)
	deadline := time.Now().Add(execTimeout)
	for {
		select {
		case <-p.done:
			// ip reports a failed exec itself and exits non-zero; a program that ran
			// and exited at once is not an error of Start.
			if log := p.Log(); p.waitErr != nil && strings.Contains(log, "exec of \"") {
				return fmt.Errorf("%w: %s", p.waitErr, strings.TrimSpace(log))
			}
			return nil
		default:
		}
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 && string(b) != ipCmdline {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ip netns exec did not exec within %v (pid %d); log: %s", execTimeout, p.pid, p.Log())
		}
		time.Sleep(time.Millisecond)
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == os.PathSeparator || r < ' ' {
			return '_'
		}
		return r
	}, s)
}

// PID is the program's PID (ip has exec'd it).
func (p *Proc) PID() int { return p.pid }

// LogPath is the file holding the process's stdout and stderr.
func (p *Proc) LogPath() string { return p.logPath }

// Log returns the process's output so far, for test failure messages.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("<log of %s unavailable: %v>", p.Name, err)
	}
	return string(b)
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s/%s (pid %d): signal %v: %w", p.Host.Name, p.Name, p.pid, sig, err)
	}
	return nil
}

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error, as exec.Cmd.Wait.
func (p *Proc) Wait() error {
	<-p.done
	return p.waitErr
}

// Stop sends SIGTERM, then SIGKILL after StopTimeout, and waits for the process to exit.
// It returns nil once the process is gone, whatever its exit status (see Wait for that).
func (p *Proc) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s/%s (pid %d): SIGTERM: %w", p.Host.Name, p.Name, p.pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(StopTimeout):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s/%s (pid %d): SIGKILL: %w", p.Host.Name, p.Name, p.pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s/%s (pid %d): still running 5s after SIGKILL", p.Host.Name, p.Name, p.pid)
	}
}

// Run runs argv inside h's namespace to completion and returns its combined output. A
// failure's error includes the output.
func (h *Host) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%s: run: empty argv", h.Name)
	}
	if err := h.lab.checkOpen(); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, argv...)...)
	// A command that leaves a background child holding the output pipe must not hang Run.
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %s: %w; output: %s", h.Name, strings.Join(argv, " "), err, truncate(out, 2000))
	}
	return out, nil
}

func truncate(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
