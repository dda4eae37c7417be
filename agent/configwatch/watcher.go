// Package configwatch reads the agent's config file at start, whenever its
// bytes change and on demand, and publishes the last good configuration as
// the AgentConfig resource with a ConfigStatus saying what happened.
//
// A bad file never replaces a good configuration: it is rejected, logged once,
// counted, and shown in ConfigStatus while the agent keeps running on what it had.
package configwatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/config"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Watcher keeps AgentConfig in step with the file.
type Watcher struct {
	path   string
	state  state.State
	logger *zap.Logger

	reloads    *prometheus.CounterVec
	generation prometheus.Gauge

	mu          sync.Mutex
	running     *config.Config // the configuration the agent started with
	appliedSum  string
	rejectedSum string
	rejectedErr error
	gen         uint64
	restart     []string
}

// New makes a watcher; Load must succeed before Run.
func New(path string, st state.State, reg prometheus.Registerer, logger *zap.Logger) *Watcher {
	w := &Watcher{
		path:   path,
		state:  st,
		logger: logger,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "talos_lb", Subsystem: "config", Name: "reloads_total",
			Help: "Reads of a changed config file, by result (accepted or rejected).",
		}, []string{"result"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "config", Name: "generation",
			Help: "Accepted configurations since the agent started.",
		}),
	}

	reg.MustRegister(w.reloads, w.generation)

	return w
}

// Load reads the file for the first time. A bad file here is fatal: there is
// no last good configuration to fall back on.
func (w *Watcher) Load(ctx context.Context) (*config.Config, error) {
	cfg, raw, err := config.Load(w.path)
	if err != nil {
		return nil, err
	}

	w.mu.Lock()
	defer w.mu.Unlock()

	w.running = cfg

	if err := w.apply(ctx, cfg, raw); err != nil {
		return nil, err
	}

	return cfg, nil
}

// Run re-reads the file every interval until ctx ends. Polling (rather than
// inotify) also sees the symlink swaps used to update mounted config files.
func (w *Watcher) Run(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			// A rejection is already logged and shown in ConfigStatus.
			w.Reload(ctx) //nolint:errcheck
		}
	}
}

// Reload reads the file now. It reports whether the file's content is what
// runs (accepted, or unchanged), the generation running, and why it was rejected.
func (w *Watcher) Reload(ctx context.Context) (bool, uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()

	raw, err := os.ReadFile(w.path)
	if err != nil {
		return false, w.gen, w.reject(ctx, "", fmt.Errorf("reading config file: %w", err))
	}

	sum := digest(raw)

	switch sum {
	case w.appliedSum:
		if w.rejectedSum != "" {
			// The file went back to the running configuration: nothing is wrong any more.
			w.rejectedSum, w.rejectedErr = "", nil

			return true, w.gen, w.writeStatus(ctx, "", nil)
		}

		return true, w.gen, nil
	case w.rejectedSum:
		return false, w.gen, w.rejectedErr
	}

	cfg, err := config.Parse(raw)
	if err != nil {
		return false, w.gen, w.reject(ctx, sum, fmt.Errorf("%s: %w", w.path, err))
	}

	if err := w.apply(ctx, cfg, raw); err != nil {
		return false, w.gen, err
	}

	return true, w.gen, nil
}

func (w *Watcher) reject(ctx context.Context, sum string, err error) error {
	w.rejectedSum, w.rejectedErr = sum, err
	w.reloads.WithLabelValues("rejected").Inc()
	w.logger.Error("config rejected, keeping the last good one", zap.Uint64("generation", w.gen), zap.Error(err))

	if statusErr := w.writeStatus(ctx, sum, err); statusErr != nil {
		return statusErr
	}

	return err
}

func (w *Watcher) apply(ctx context.Context, cfg *config.Config, raw []byte) error {
	sum := digest(raw)

	if err := safe.StateModify(ctx, w.state, resources.NewAgentConfig(), func(r *resources.AgentConfig) error {
		r.TypedSpec().Value = Spec(cfg, w.running, w.path, sum)

		return nil
	}); err != nil {
		return fmt.Errorf("publishing agent config: %w", err)
	}

	if err := publishProxies(ctx, w.state, cfg); err != nil {
		return err
	}

	if err := publishVIP(ctx, w.state, cfg, w.running); err != nil {
		return err
	}

	if err := publishBGP(ctx, w.state, cfg); err != nil {
		return err
	}

	w.gen++
	w.appliedSum = sum
	w.rejectedSum, w.rejectedErr = "", nil

	w.generation.Set(float64(w.gen))
	w.reloads.WithLabelValues("accepted").Inc()

	w.restart = RestartRequired(w.running, cfg)
	w.logger.Info("config applied", zap.Uint64("generation", w.gen), zap.String("sha256", sum), zap.Strings("restart_required", w.restart))

	return w.writeStatus(ctx, "", nil)
}

func (w *Watcher) writeStatus(ctx context.Context, rejectedSum string, rejectErr error) error {
	now := timestamppb.Now()

	err := safe.StateModify(ctx, w.state, resources.NewConfigStatus(), func(r *resources.ConfigStatus) error {
		s := r.TypedSpec().Value
		s.Path = w.path
		s.LastAttemptAt = now
		s.RejectedSha256 = rejectedSum
		s.LastError = ""

		if rejectErr != nil {
			s.LastError = rejectErr.Error()

			return nil
		}

		if s.GetAppliedSha256() != w.appliedSum {
			s.AppliedAt = now
		}

		s.Generation = w.gen
		s.AppliedSha256 = w.appliedSum
		s.RestartRequired = w.restart

		return nil
	})
	if err != nil {
		return fmt.Errorf("publishing config status: %w", err)
	}

	return nil
}

func digest(raw []byte) string {
	h := sha256.Sum256(raw)

	return hex.EncodeToString(h[:])
}

// Spec converts a parsed config into the AgentConfig spec. Fields that only
// take effect at start keep the running values, so the resource always says
// what the agent actually runs with.
func Spec(cfg, running *config.Config, path, sum string) *resourcepb.AgentConfigSpec {
	spec := &resourcepb.AgentConfigSpec{
		NodeName:      running.Node.Name,
		Role:          string(cfg.Node.Role),
		ApiListen:     running.API.Listen,
		StateDir:      running.StateDir,
		SourcePath:    path,
		Sha256:        sum,
		HealthChecks:  make([]*resourcepb.HealthCheckSpec, 0, len(cfg.HealthChecks)),
		MetricsListen: "",
	}

	if running.Metrics.Enabled {
		spec.MetricsListen = running.Metrics.Listen
	}

	for _, h := range cfg.HealthChecks {
		spec.HealthChecks = append(spec.HealthChecks, healthCheckSpec(h))
	}

	spec.HealthChecks = append(spec.HealthChecks, ipvsChecks(cfg)...)

	return spec
}
