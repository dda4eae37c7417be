package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"syscall"

	"go.uber.org/zap"

	"github.com/talos-lb/talos-lb/agent/configwatch"
	"github.com/talos-lb/talos-lb/agent/health"
	"github.com/talos-lb/talos-lb/agent/proxy/lb"
	"github.com/talos-lb/talos-lb/pkg/config"
)

// With -profile, talos-lb runs as this program's second life instead of
// lb-agent: the same agent config, the same package lb, but with a control
// address on which the benchmark starts and stops a CPU profile around each
// load. lb-agent itself has no profiling hook.

const serveEnv = "BENCH_PROXY_SERVE" // "<agent config>,<control address>"

// serveLB runs the proxies of an agent config until SIGINT or SIGTERM.
func serveLB(arg string) error {
	cfgPath, control, ok := bytes.Cut([]byte(arg), []byte(","))
	if !ok {
		return fmt.Errorf("%s=%q: want <config>,<control address>", serveEnv, arg)
	}

	cfg, _, err := config.Load(string(cfgPath))
	if err != nil {
		return err
	}

	for _, pc := range cfg.Proxies {
		p := lb.New(health.NetProber{}, func() {}, zap.NewNop())
		if err := p.Update(configwatch.ProxySpec(pc, nil)); err != nil {
			return err
		}

		defer p.Close()
	}

	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)

	mux := http.NewServeMux()
	mux.HandleFunc("/start", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()

		buf.Reset()

		if err := pprof.StartCPUProfile(&buf); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
		}
	})
	mux.HandleFunc("/stop", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()

		pprof.StopCPUProfile()
		w.Write(buf.Bytes()) //nolint:errcheck
	})

	ln, err := net.Listen("tcp", string(control))
	if err != nil {
		return err
	}

	srv := &http.Server{Handler: mux} //nolint:gosec // loopback, benchmark only

	go srv.Serve(ln) //nolint:errcheck

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	<-ctx.Done()

	return srv.Close()
}

// profiler collects the CPU profiles of a -profile run, one file per load and round.
type profiler struct {
	dir, control string
}

func (pr *profiler) call(what string) ([]byte, error) {
	resp, err := http.Get("http://" + pr.control + "/" + what) //nolint:noctx // loopback, instant
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() //nolint:errcheck

	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return nil, err
	}

	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(b.String())
	}

	return b.Bytes(), nil
}

// around profiles f as <dir>/<load>-<round>.pprof.
func (pr *profiler) around(load string, round int, f func() error) error {
	if pr == nil {
		return f()
	}

	if _, err := pr.call("start"); err != nil {
		return fmt.Errorf("start profile: %w", err)
	}

	ferr := f()

	prof, err := pr.call("stop")
	if err != nil {
		return errors.Join(ferr, fmt.Errorf("stop profile: %w", err))
	}

	return errors.Join(ferr, os.WriteFile(filepath.Join(pr.dir, fmt.Sprintf("%s-%d.pprof", load, round)), prof, 0o600))
}
