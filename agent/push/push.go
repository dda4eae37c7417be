// Package push is the agent's side of the controller's push: it checks a
// pushed NodeDesiredState, publishes it as resources (ServiceIP, PushedBGPPeer,
// APIEndpoints) with a PushStatus saying what runs, keeps it on disk so a
// restarted agent serves its last state while the controller is away, and
// answers the controller with the generation it runs.
//
// A refused push changes nothing that runs: it is logged, counted and shown
// in PushStatus (rejectedGeneration, lastError), and the answer names what is
// wrong.
package push

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// Announcer tells which service IPs this node announces right now (L2 owner
// or BGP). Nothing announces service IPs yet; the daemon will provide one.
type Announcer interface {
	Announcing() []string
}

// Options configure a Handler.
type Options struct {
	// State receives the published resources.
	State state.State
	// NodeName is this node; a state computed for another node is refused.
	NodeName string
	// StateDir keeps the last good state (StateFile) and BGP passwords (PasswordDir).
	StateDir string
	// NoSync skips fsync when keeping the state: for many in-process agents
	// in tests and benchmarks, never for a real agent.
	NoSync bool
	// Announcer may be nil: the answer then lists no announced IPs.
	Announcer Announcer
	// Registry may be nil: metrics are then kept but not exported.
	Registry prometheus.Registerer
	Logger   *zap.Logger
}

// Results counted in talos_lb_push_total{result}.
const (
	ResultAccepted  = "accepted"  // a new generation runs
	ResultUnchanged = "unchanged" // the running generation was pushed again
	ResultRejected  = "rejected"  // invalid state
	ResultStale     = "stale"     // older than (or conflicting with) the running generation
	ResultFailed    = "failed"    // valid, but publishing it failed
)

// Handler applies pushes. It is safe for concurrent use; pushes are applied one at a time.
type Handler struct {
	opts   Options
	logger *zap.Logger

	pushes     *prometheus.CounterVec
	generation prometheus.Gauge

	mu      sync.Mutex
	running *resourcepb.NodeDesiredState // nil until the first push (or restore)
	pub     published
}

// New makes a handler; call Restore once before serving pushes.
func New(opts Options) *Handler {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}

	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}

	h := &Handler{
		opts:   opts,
		logger: opts.Logger,
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "talos_lb", Subsystem: "push", Name: "total",
			Help: "Pushes from the controller, by result (accepted, unchanged, rejected, stale, failed).",
		}, []string{"result"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "talos_lb", Subsystem: "push", Name: "generation",
			Help: "Generation of the pushed state running now (0: none).",
		}),
		pub: newPublished(),
	}

	for _, r := range []string{ResultAccepted, ResultUnchanged, ResultRejected, ResultStale, ResultFailed} {
		h.pushes.WithLabelValues(r)
	}

	opts.Registry.MustRegister(h.pushes, h.generation)

	return h
}

// Running returns the generation running now (0: none).
func (h *Handler) Running() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()

	return h.running.GetGeneration()
}

// Current returns the state running now (nil: none), for the controllers
// that will act on node sets and advertisement rules. It must not be changed.
func (h *Handler) Current() *resourcepb.NodeDesiredState {
	h.mu.Lock()
	defer h.mu.Unlock()

	return h.running
}

// Restore publishes the state kept on disk by the last accepted push, if
// any, so the agent serves it until the controller pushes again. A missing
// file is normal; a corrupt or unusable one is logged and ignored. It fails
// only when the resources cannot be written.
func (h *Handler) Restore(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()

	s, savedAt, err := load(h.opts.StateDir)

	switch {
	case err != nil:
		h.logger.Warn("ignoring the kept push state; waiting for the controller", zap.Error(err))
	case s == nil:
		h.logger.Info("no kept push state; waiting for the controller")
	default:
		if err := Validate(h.opts.NodeName, s); err != nil {
			h.logger.Warn("ignoring the kept push state; waiting for the controller", zap.String("path", statePath(h.opts.StateDir)), zap.Error(err))

			break
		}

		if err := h.apply(ctx, s, savedAt); err != nil {
			return fmt.Errorf("restoring pushed state generation %d: %w", s.GetGeneration(), err)
		}

		h.logger.Info("restored the last pushed state", zap.Uint64("generation", s.GetGeneration()),
			zap.String("controller", s.GetController()), zap.Time("applied_at", savedAt))

		return nil
	}

	return h.writeStatus(ctx, func(*resourcepb.PushStatusSpec) {})
}

// Push applies a pushed state, or refuses it saying why. A refusal is an
// answer (accepted=false, error), not a gRPC error; a gRPC error means the
// agent could not publish a valid state.
func (h *Handler) Push(ctx context.Context, req *agentpb.PushRequest) (*agentpb.PushResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()

	s := req.GetState()
	running := h.running.GetGeneration()

	// Staleness first: the controller moves its counter above ours and pushes
	// again, and only then learns what else is wrong.
	if s.GetNode() == h.opts.NodeName && s.GetGeneration() != 0 && s.GetGeneration() <= running {
		if s.GetGeneration() == running && proto.Equal(s, h.running) {
			h.pushes.WithLabelValues(ResultUnchanged).Inc()

			return h.answer(true, ""), nil
		}

		err := fmt.Errorf("generation %d is older than the running generation %d (from %s)", s.GetGeneration(), running, h.running.GetController())
		if s.GetGeneration() == running {
			err = fmt.Errorf("generation %d already runs with a different state (from %s)", running, h.running.GetController())
		}

		return h.reject(ctx, s, ResultStale, err)
	}

	if err := Validate(h.opts.NodeName, s); err != nil {
		return h.reject(ctx, s, ResultRejected, err)
	}

	now := time.Now()

	if err := h.apply(ctx, s, now); err != nil {
		h.pushes.WithLabelValues(ResultFailed).Inc()
		h.logger.Error("publishing the pushed state failed", zap.Uint64("generation", s.GetGeneration()), zap.Error(err))

		return nil, status.Errorf(codes.Internal, "publishing generation %d: %v", s.GetGeneration(), err)
	}

	if err := save(h.opts.StateDir, s, !h.opts.NoSync); err != nil {
		// It runs; only a restart before the next push would lose it.
		h.logger.Warn("keeping the pushed state on disk failed", zap.Error(err))
	}

	h.pushes.WithLabelValues(ResultAccepted).Inc()
	h.logger.Info("pushed state applied", zap.Uint64("generation", s.GetGeneration()), zap.String("controller", s.GetController()),
		zap.Int("service_ips", len(s.GetServiceIps())), zap.Int("bgp_peers", len(s.GetBgpPeers())), zap.Int("api_endpoints", len(s.GetApiEndpoints())))

	return h.answer(true, ""), nil
}

func (h *Handler) reject(ctx context.Context, s *resourcepb.NodeDesiredState, result string, reason error) (*agentpb.PushResponse, error) {
	h.pushes.WithLabelValues(result).Inc()
	h.logger.Warn("push refused, the running state stays", zap.Uint64("pushed_generation", s.GetGeneration()),
		zap.Uint64("running_generation", h.running.GetGeneration()), zap.String("result", result), zap.Error(reason))

	if err := h.writeStatus(ctx, func(st *resourcepb.PushStatusSpec) {
		st.RejectedGeneration = s.GetGeneration()
		st.LastError = reason.Error()
	}); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}

	return h.answer(false, reason.Error()), nil
}

func (h *Handler) answer(accepted bool, reason string) *agentpb.PushResponse {
	resp := &agentpb.PushResponse{Accepted: accepted, Generation: h.running.GetGeneration(), Error: reason}

	if h.opts.Announcer != nil {
		resp.Announcing = h.opts.Announcer.Announcing()
	}

	return resp
}
