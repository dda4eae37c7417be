// Package daemon wires the agent together: state, config watcher, COSI
// controllers, gRPC API and metrics, and shuts them down in order on SIGTERM.
// It holds no logic of its own beyond that wiring.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/controller/runtime"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/talos-lb/talos-lb/agent/bgp"
	"github.com/talos-lb/talos-lb/agent/bgp/speaker"
	"github.com/talos-lb/talos-lb/agent/configwatch"
	"github.com/talos-lb/talos-lb/agent/election"
	"github.com/talos-lb/talos-lb/agent/grpcapi"
	"github.com/talos-lb/talos-lb/agent/health"
	"github.com/talos-lb/talos-lb/agent/ipvs"
	"github.com/talos-lb/talos-lb/agent/ipvs/kernel"
	"github.com/talos-lb/talos-lb/agent/ipvs/snat"
	"github.com/talos-lb/talos-lb/agent/node"
	"github.com/talos-lb/talos-lb/agent/proxy"
	"github.com/talos-lb/talos-lb/agent/push"
	"github.com/talos-lb/talos-lb/agent/vip"
	"github.com/talos-lb/talos-lb/pkg/config"
	"github.com/talos-lb/talos-lb/pkg/l2"
	"github.com/talos-lb/talos-lb/pkg/netutil"
	"github.com/talos-lb/talos-lb/pkg/pki"
	"github.com/talos-lb/talos-lb/pkg/resources"
	"github.com/talos-lb/talos-lb/pkg/version"
)

// Options are the agent's command-line settings.
type Options struct {
	ConfigPath string
	// ConfigPoll is how often the config file is checked for changes.
	ConfigPoll time.Duration
	Logger     *zap.Logger
	// Reload receives a value for every SIGHUP.
	Reload <-chan struct{}
}

// shutdownBudget keeps the whole shutdown well inside Talos's 10 s before SIGKILL.
const shutdownBudget = 3 * time.Second

// Run runs the agent until ctx is cancelled, then shuts it down.
func Run(ctx context.Context, opts Options) error {
	logger := opts.Logger
	startedAt := time.Now()

	st := state.WrapCore(namespaced.NewState(inmem.Build))
	if err := resources.Register(ctx, st); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)

	watcher := configwatch.New(opts.ConfigPath, st, reg, logger)

	cfg, err := watcher.Load(ctx)
	if err != nil {
		return fmt.Errorf("loading config: %w", err)
	}

	logger = logger.With(zap.String("node", cfg.Node.Name))

	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state directory (stateDir): %w", err)
	}

	serviceL2 := newL2Service(st, cfg.Node.Name, reg, logger.Named("l2svc"))
	defer serviceL2.close()

	serviceBGP := newBGPService(st, cfg.Node.Name)

	// The last pushed state runs again at once, whether or not the controller is there.
	pushes := push.New(push.Options{
		State: st, NodeName: cfg.Node.Name, StateDir: cfg.StateDir, Registry: reg, Logger: logger.Named("push"),
		Announcer: announcers{serviceL2.announcer, serviceBGP.announcer},
	})
	if err := pushes.Restore(ctx); err != nil {
		return err
	}

	gossip, err := startMembers(ctx, st, cfg, reg, logger.Named("member"))
	if err != nil {
		return err
	}
	defer gossip.close()

	serverTLS, clientTLS, err := loadTLS(cfg.API.TLS)
	if err != nil {
		return err
	}

	// Bind every port before starting anything, so a taken port fails the start loudly.
	apiListener, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen %s: %w", cfg.API.Listen, err)
	}

	var metricsListener net.Listener

	if cfg.Metrics.Enabled {
		metricsListener, err = net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			apiListener.Close() //nolint:errcheck

			return fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err)
		}
	}

	rt, err := runtime.NewRuntime(st, logger.Named("runtime"))
	if err != nil {
		return fmt.Errorf("creating controller runtime: %w", err)
	}

	ipvsKernel := &kernel.IPVS{}
	defer ipvsKernel.Close()

	ipvsServices := &ipvs.ServiceController{Kernel: ipvsKernel, SNAT: &snat.Masquerade{}, Metrics: ipvs.NewMetrics(reg)}

	for _, c := range append([]controller.Controller{
		&health.Controller{Prober: health.NetProber{}, Metrics: health.NewMetrics(reg)},
		&node.StatusController{Addresses: netutil.NetlinkAddresses{}, Version: version.Version, StartedAt: startedAt},
		&proxy.Controller{Metrics: proxy.NewMetrics(reg)},
		&election.Controller{Transport: election.TLSTransport(serverTLS, clientTLS), LogOutput: os.Stderr},
		&vip.StatusController{Links: netutil.NetlinkLinks{}, Changes: netutil.NetlinkAddresses{}},
		&vip.AddressController{Links: netutil.NetlinkLinks{}, Announcer: l2.RawAnnouncer{}},
		&vip.AdvertiseController{},
		&vip.IPVSController{},
		&bgp.Controller{Speaker: speaker.NewGoBGP(slog.New(slog.NewJSONHandler(os.Stderr, nil))), Host: bgp.NetlinkHost{}, NodeName: cfg.Node.Name},
		ipvsServices,
	}, slices.Concat(serviceL2.controllers(), serviceBGP.controllers())...) {
		if err := rt.RegisterController(c); err != nil {
			return fmt.Errorf("registering controller %s: %w", c.Name(), err)
		}
	}

	if err := gossip.register(rt); err != nil {
		return err
	}

	api := grpcapi.New(grpcapi.Options{
		State: st, Reloader: watcher, Pusher: pushes, NodeName: cfg.Node.Name, Version: version.Version,
		TLS: serverTLS, Registry: reg, Logger: logger.Named("api"),
	})

	runCtx, stopRuntime := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRuntime()

	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)

	fail := func(err error) {
		errOnce.Do(func() { runErr = err })
	}

	goFn := func(fn func()) {
		wg.Add(1)

		go func() {
			defer wg.Done()

			fn()
		}()
	}

	// A component that dies takes the agent down: Talos restarts the service.
	componentCtx, componentFailed := context.WithCancel(ctx)
	defer componentFailed()

	goFn(func() {
		if err := rt.Run(runCtx); err != nil {
			fail(fmt.Errorf("controller runtime: %w", err))
			componentFailed()
		}
	})
	goFn(func() {
		if err := api.Serve(apiListener); err != nil {
			fail(err)
			componentFailed()
		}
	})
	goFn(func() { watcher.Run(runCtx, opts.ConfigPoll) })
	goFn(func() {
		for {
			select {
			case <-runCtx.Done():
				return
			case <-opts.Reload:
				watcher.Reload(runCtx) //nolint:errcheck // logged and shown in ConfigStatus
			}
		}
	})

	var metricsServer *http.Server

	if metricsListener != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		metricsServer = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

		goFn(func() {
			logger.Info("metrics listening", zap.Stringer("address", metricsListener.Addr()))

			if err := metricsServer.Serve(metricsListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fail(fmt.Errorf("metrics server: %w", err))
				componentFailed()
			}
		})
	}

	logger.Info("agent started", zap.String("version", version.Version), zap.String("role", string(cfg.Node.Role)))

	<-componentCtx.Done()

	logger.Info("agent stopping")

	gossip.leave()

	handOff(ctx, st, logger)

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownBudget)
	defer cancel()

	api.Stop(time.Second)

	if metricsServer != nil {
		metricsServer.Shutdown(shutdownCtx) //nolint:errcheck // best effort on the way out
	}

	stopRuntime()
	wg.Wait()

	// Only once the runtime has stopped: no reconcile may put back what this removes.
	if err := ipvsServices.Cleanup(logger.With(zap.String("controller", ipvsServices.Name()))); err != nil {
		logger.Warn("removing IPVS services and masquerade rules", zap.Error(err))
	}

	logger.Info("agent stopped")

	return runErr
}

// loadTLS reads the agent's certificate: it serves the API and the election,
// and dials election peers.
func loadTLS(t config.TLS) (server, client *tls.Config, err error) {
	var pems [3][]byte

	for i, f := range []struct{ field, path string }{{"ca", t.CA}, {"cert", t.Cert}, {"key", t.Key}} {
		if pems[i], err = os.ReadFile(f.path); err != nil {
			return nil, nil, fmt.Errorf("api.tls.%s: %w", f.field, err)
		}
	}

	if server, err = pki.ServerTLS(pems[0], pems[1], pems[2]); err != nil {
		return nil, nil, fmt.Errorf("api.tls: %w", err)
	}

	if client, err = pki.ClientTLS(pems[0], pems[1], pems[2], pki.AgentServerName); err != nil {
		return nil, nil, fmt.Errorf("api.tls: %w", err)
	}

	return server, client, nil
}

func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "talos_lb", Name: "build_info",
		Help: "Always 1; the labels say which build runs.",
	}, []string{"version"})
	g.WithLabelValues(version.Version).Set(1)

	return g
}
